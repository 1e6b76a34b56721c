package org.facekd.core;

import java.util.List;
import java.util.Map;

/**
 * Open-set identification against a {@link Gallery}.
 *
 * <p>A person's score is the best cosine between the probe and any of their templates; the
 * best-scoring person is the answer if {@code score >= threshold} (the same rule the export's
 * golden pairs use for {@code "match"}), otherwise the probe is {@link #UNKNOWN}.
 *
 * <p>The threshold comes from a {@link MatchPolicy}: in 1:N identification it is recomputed at
 * every {@link #match} from the gallery's current number of templates (a probe compared with more
 * impostor templates needs a stricter threshold for the same FPIR), so it tightens as people enrol.
 */
public final class FaceMatcher {
    /** Label shown for a face below the threshold or with an empty gallery. */
    public static final String UNKNOWN = "unknown";

    private final Gallery gallery;
    private final MatchPolicy policy;

    /** A matcher with a fixed threshold, whatever the gallery's size. */
    public FaceMatcher(Gallery gallery, double threshold) {
        this(gallery, MatchPolicy.fixed(threshold));
    }

    /** A matcher whose threshold the policy chooses, for the gallery's size at each match. */
    public FaceMatcher(Gallery gallery, MatchPolicy policy) {
        if (gallery == null || policy == null) {
            throw new IllegalArgumentException("a matcher needs a gallery and a policy");
        }
        this.gallery = gallery;
        this.policy = policy;
    }

    /** The single verification rule: same person iff {@code cosine >= threshold}. */
    public static boolean isMatch(double cosine, double threshold) {
        return cosine >= threshold;
    }

    public MatchPolicy policy() {
        return policy;
    }

    /**
     * The threshold a match would use now, for the gallery's current number of templates.
     *
     * @throws CalibrationRangeException if the gallery has outgrown the policy's calibrated range
     */
    public double threshold() {
        return policy.threshold(gallery.templateCount());
    }

    /**
     * Best match of a raw or normalised probe embedding.
     *
     * @throws CalibrationRangeException if the gallery holds more templates than the policy's
     *     operating points can promise its FPIR for (see {@link MatchPolicy#maxTemplates()})
     */
    public Match match(float[] embedding) {
        if (embedding.length != gallery.dimension()) {
            throw new IllegalArgumentException("probe has " + embedding.length + " values, gallery holds "
                    + gallery.dimension() + "-d templates");
        }
        float[] probe = Embeddings.l2Normalize(embedding);
        Map<String, List<float[]>> people = gallery.snapshot();
        int templates = 0;
        for (List<float[]> personTemplates : people.values()) {
            templates += personTemplates.size();
        }
        double threshold = policy.threshold(templates); // the comparisons this probe makes
        String bestName = null;
        double bestScore = Double.NEGATIVE_INFINITY;
        for (Map.Entry<String, List<float[]>> person : people.entrySet()) {
            for (float[] template : person.getValue()) {
                double score = Embeddings.dot(probe, template);
                if (score > bestScore) {
                    bestScore = score;
                    bestName = person.getKey();
                }
            }
        }
        return new Match(bestName, bestScore, threshold, templates);
    }

    /** Outcome of one probe. */
    public static final class Match {
        private final String candidate;
        private final double score;
        private final double threshold;
        private final int templates;

        Match(String candidate, double score, double threshold, int templates) {
            this.candidate = candidate;
            this.score = score;
            this.threshold = threshold;
            this.templates = templates;
        }

        /** True if the best candidate reaches the threshold. */
        public boolean isKnown() {
            return candidate != null && isMatch(score, threshold);
        }

        /** The matched name, or {@link #UNKNOWN}. */
        public String label() {
            return isKnown() ? candidate : UNKNOWN;
        }

        /** Best-scoring enrolled person even below the threshold; null for an empty gallery. */
        public String candidate() {
            return candidate;
        }

        /** Best cosine; negative infinity for an empty gallery. */
        public double score() {
            return score;
        }

        /** The threshold this match used (chosen for {@link #templates()} comparisons). */
        public double threshold() {
            return threshold;
        }

        /** Templates the probe was compared with. */
        public int templates() {
            return templates;
        }

        @Override
        public String toString() {
            return label() + (candidate == null ? "" : String.format(java.util.Locale.ROOT, " (%s %.3f, threshold %.3f)",
                    candidate, score, threshold));
        }
    }
}
