package org.facekd.core;

import java.util.Locale;

/**
 * How a cosine threshold is chosen: 1:1 verification at a false accept rate (FAR), or 1:N
 * identification at a false positive identification rate (FPIR) against the gallery's current
 * number of templates, both from the manifest's {@link OperatingPoints}.
 *
 * <p>A manifest without operating points (an export made before them) falls back to its
 * best-accuracy {@code threshold}, and {@link #warning()} says so: that threshold was chosen on
 * balanced pairs and names strangers as someone in a gallery of a few hundred templates.
 */
public final class MatchPolicy {
    /** Default FAR of 1:1 verification. */
    public static final double DEFAULT_VERIFICATION_FAR = 1e-4;
    /** Default FPIR of 1:N identification (1 %). */
    public static final double DEFAULT_IDENTIFICATION_FPIR = 0.01;
    /** The warning of a policy built from a manifest without operating points. */
    public static final String NO_OPERATING_POINTS_WARNING = "manifest has no operating points (exported before "
            + "they existed): using its best-accuracy threshold, which accepts far more strangers; re-export with "
            + "facekd export";

    /** What the threshold is chosen for. */
    public enum Mode {
        /** 1:1: one comparison at {@link #rate()} = FAR. */
        VERIFICATION,
        /** 1:N: the whole gallery at {@link #rate()} = FPIR; the threshold tightens as the gallery grows. */
        IDENTIFICATION,
        /** A threshold given by the caller, whatever the gallery. */
        FIXED
    }

    private final Mode mode;
    private final double rate;
    private final OperatingPoints points;
    private final double fallbackThreshold;
    private final String warning;

    private MatchPolicy(Mode mode, double rate, OperatingPoints points, double fallbackThreshold, String warning) {
        this.mode = mode;
        this.rate = rate;
        this.points = points;
        this.fallbackThreshold = fallbackThreshold;
        this.warning = warning;
    }

    /**
     * 1:1 verification at {@code far}, from the manifest's operating points (or its threshold, with a
     * warning, if it has none).
     *
     * @throws CalibrationRangeException if {@code far} is below the calibrated range
     */
    public static MatchPolicy verification(ModelManifest manifest, double far) {
        MatchPolicy policy = of(Mode.VERIFICATION, far, manifest);
        policy.threshold(1); // refuse an uncalibrated FAR now rather than at the first face
        return policy;
    }

    /** 1:1 verification at {@link #DEFAULT_VERIFICATION_FAR}. */
    public static MatchPolicy verification(ModelManifest manifest) {
        return verification(manifest, DEFAULT_VERIFICATION_FAR);
    }

    /**
     * 1:N identification at {@code fpir}, from the manifest's operating points (or its threshold, with
     * a warning, if it has none).
     *
     * @throws CalibrationRangeException if even a one-template gallery is outside the calibrated range
     */
    public static MatchPolicy identification(ModelManifest manifest, double fpir) {
        MatchPolicy policy = of(Mode.IDENTIFICATION, fpir, manifest);
        policy.threshold(1);
        return policy;
    }

    /** 1:N identification at {@link #DEFAULT_IDENTIFICATION_FPIR}. */
    public static MatchPolicy identification(ModelManifest manifest) {
        return identification(manifest, DEFAULT_IDENTIFICATION_FPIR);
    }

    /** 1:1 verification at {@code far} from operating points alone (e.g. a golden fixture's). */
    public static MatchPolicy verification(OperatingPoints points, double far) {
        MatchPolicy policy = new MatchPolicy(Mode.VERIFICATION, checkRate("FAR", far), points, Double.NaN, null);
        policy.threshold(1);
        return policy;
    }

    /** 1:N identification at {@code fpir} from operating points alone (e.g. a golden fixture's). */
    public static MatchPolicy identification(OperatingPoints points, double fpir) {
        MatchPolicy policy = new MatchPolicy(Mode.IDENTIFICATION, checkRate("FPIR", fpir), points, Double.NaN, null);
        policy.threshold(1);
        return policy;
    }

    /** A fixed cosine threshold in [-1, 1], whatever the gallery. */
    public static MatchPolicy fixed(double threshold) {
        if (Double.isNaN(threshold) || threshold < -1 || threshold > 1) {
            throw new IllegalArgumentException("cosine threshold must be in [-1, 1], got " + threshold);
        }
        return new MatchPolicy(Mode.FIXED, Double.NaN, null, threshold, null);
    }

    private static MatchPolicy of(Mode mode, double rate, ModelManifest manifest) {
        checkRate(mode == Mode.VERIFICATION ? "FAR" : "FPIR", rate);
        if (manifest.hasOperatingPoints()) {
            return new MatchPolicy(mode, rate, manifest.operatingPoints(), Double.NaN, null);
        }
        return new MatchPolicy(mode, rate, null, manifest.threshold(), NO_OPERATING_POINTS_WARNING);
    }

    private static double checkRate(String name, double rate) {
        if (!(rate > 0 && rate < 1)) {
            throw new IllegalArgumentException(name + " must lie in (0, 1), got " + rate);
        }
        return rate;
    }

    /**
     * The cosine threshold for a probe compared with a gallery of {@code templates} templates
     * (ignored except in identification; values below 1 count as 1).
     *
     * @throws CalibrationRangeException in identification when the gallery holds more than
     *     {@link #maxTemplates()} templates
     */
    public double threshold(int templates) {
        if (points == null) {
            return fallbackThreshold;
        }
        return mode == Mode.IDENTIFICATION
                ? points.identificationThreshold(rate, templates)
                : points.verificationThreshold(rate);
    }

    /**
     * The most templates the gallery may hold: in identification from operating points,
     * {@link OperatingPoints#maxTemplates(double)}; otherwise {@link Integer#MAX_VALUE}. Refuse enrolments past it.
     */
    public int maxTemplates() {
        return mode == Mode.IDENTIFICATION && points != null ? points.maxTemplates(rate) : Integer.MAX_VALUE;
    }

    public Mode mode() {
        return mode;
    }

    /** FAR in verification, FPIR in identification, NaN for a fixed threshold. */
    public double rate() {
        return rate;
    }

    /** True if thresholds come from operating points (not a fixed or fallback threshold). */
    public boolean usesOperatingPoints() {
        return points != null;
    }

    /**
     * The operating points thresholds come from.
     *
     * @throws IllegalStateException if the policy has none (fixed threshold or old manifest)
     */
    public OperatingPoints operatingPoints() {
        if (points == null) {
            throw new IllegalStateException("this policy has no operating points");
        }
        return points;
    }

    /** A warning to show the user (old manifest: fallback threshold), or null if there is none. */
    public String warning() {
        return warning;
    }

    public boolean hasWarning() {
        return warning != null;
    }

    /**
     * One line naming the policy, e.g. {@code 1:N identification at FPIR 0.01, 120 templates:
     * threshold 0.3712}.
     */
    public String describe(int templates) {
        String threshold;
        try {
            threshold = String.format(Locale.ROOT, "%.4f", threshold(templates));
        } catch (CalibrationRangeException e) {
            threshold = "none (" + e.getMessage() + ")";
        }
        switch (mode) {
            case FIXED:
                return "fixed threshold " + threshold;
            case VERIFICATION:
                return "1:1 verification at FAR " + OperatingPoints.formatG(rate) + ": threshold " + threshold
                        + (points == null ? " (manifest's best-accuracy threshold)" : "");
            default:
                int n = Math.max(1, templates);
                return "1:N identification at FPIR " + OperatingPoints.formatG(rate) + ", " + n
                        + (n == 1 ? " template" : " templates") + ": threshold " + threshold
                        + (points == null ? " (manifest's best-accuracy threshold)" : "");
        }
    }

    @Override
    public String toString() {
        switch (mode) {
            case FIXED:
                return "fixed threshold " + OperatingPoints.formatG(fallbackThreshold);
            case VERIFICATION:
                return "1:1 verification at FAR " + OperatingPoints.formatG(rate);
            default:
                return "1:N identification at FPIR " + OperatingPoints.formatG(rate);
        }
    }
}
