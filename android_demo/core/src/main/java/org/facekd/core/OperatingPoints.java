package org.facekd.core;

import java.math.BigDecimal;
import java.math.MathContext;
import java.math.RoundingMode;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The manifest's {@code operating_points}: cosine thresholds calibrated at false accept rates on
 * all impostor pairs of a validation set, and the rule that picks one for a use.
 *
 * <p>The rule (the same in Python, this class and web_demo/core.js):
 * <ul>
 *   <li>{@link #verificationThreshold(double) verification at FAR f} (0 &lt; f &lt; 1): the candidates
 *       are the points with {@code far <= f * (1 + 1e-9)}; the one with the largest far gives the
 *       threshold. None: {@link CalibrationRangeException}.
 *   <li>{@link #identificationThreshold(double, int) identification at FPIR p} against a gallery of
 *       N templates (N &lt; 1 counts as 1): the same choice at the per-comparison FAR p / N (union
 *       bound: P(any of N impostor comparisons accepted) &lt;= N·FAR); and where the export calibrated
 *       open-set galleries ({@code identification}), no lower than the threshold of the smallest
 *       calibrated gallery size &gt;= N (the largest beyond them) at its largest FPIR &lt;= p·(1 + 1e-9).
 * </ul>
 * Accepting is unchanged: same person iff {@code cosine >= threshold}.
 */
public final class OperatingPoints {
    /** Relative slack on the requested FAR, so that e.g. 0.01 / 100 still selects the 1e-4 point. */
    public static final double FAR_SLACK = 1e-9;

    /** One calibrated point: {@code far} of impostor pairs at or above {@code threshold}. */
    public static final class Point {
        private final double far;
        private final double threshold;
        private final long impostorsAbove;
        private final double tar;

        Point(double far, double threshold, long impostorsAbove, double tar) {
            this.far = far;
            this.threshold = threshold;
            this.impostorsAbove = impostorsAbove;
            this.tar = tar;
        }

        public double far() {
            return far;
        }

        public double threshold() {
            return threshold;
        }

        /** Impostor pairs at or above the threshold; -1 when the export did not record it. */
        public long impostorsAbove() {
            return impostorsAbove;
        }

        /** True accept rate of the genuine pairs at the threshold; NaN when not recorded. */
        public double tar() {
            return tar;
        }

        @Override
        public String toString() {
            return "FAR " + formatG(far) + " -> threshold " + formatG(threshold)
                    + (Double.isNaN(tar) ? "" : " (TAR " + formatG(tar) + ")");
        }
    }

    /** One open-set gallery point: at most {@code fpir} of strangers matched in galleries of {@code gallerySize}. */
    public static final class GalleryPoint {
        private final int gallerySize;
        private final double fpir;
        private final double threshold;

        GalleryPoint(int gallerySize, double fpir, double threshold) {
            this.gallerySize = gallerySize;
            this.fpir = fpir;
            this.threshold = threshold;
        }

        public int gallerySize() {
            return gallerySize;
        }

        public double fpir() {
            return fpir;
        }

        public double threshold() {
            return threshold;
        }
    }

    private final List<Point> points;
    private final List<GalleryPoint> galleries;
    private final String source;
    private final long identities;
    private final long faces;
    private final long genuinePairs;
    private final long impostorPairs;
    private final long minImpostors;

    private OperatingPoints(List<Point> points, List<GalleryPoint> galleries, String source, long identities,
            long faces, long genuinePairs, long impostorPairs, long minImpostors) {
        this.points = Collections.unmodifiableList(points);
        this.galleries = Collections.unmodifiableList(galleries);
        this.source = source;
        this.identities = identities;
        this.faces = faces;
        this.genuinePairs = genuinePairs;
        this.impostorPairs = impostorPairs;
        this.minImpostors = minImpostors;
    }

    /**
     * Parses and validates an {@code operating_points} object: {@code points} non-empty, each far in
     * (0, 1) and threshold in [-1, 1], far strictly descending and threshold ascending.
     *
     * @throws ContractException naming the offending point
     */
    public static OperatingPoints fromJson(Json.Obj json) {
        String where = "operating_points";
        List<Json.Obj> items = json.objects("points");
        if (items.isEmpty()) {
            throw new ContractException(where + ": 'points' is empty: re-export with facekd export");
        }
        List<Point> points = new ArrayList<>(items.size());
        for (int i = 0; i < items.size(); i++) {
            Json.Obj item = items.get(i);
            String at = where + ".points[" + i + "]";
            double far = item.number("far");
            double threshold = item.number("threshold");
            if (!(far > 0 && far < 1)) {
                throw new ContractException(at + ": far " + far + " is not in (0, 1)");
            }
            if (!(threshold >= -1 && threshold <= 1)) {
                throw new ContractException(at + ": threshold " + threshold + " is not a cosine in [-1, 1]");
            }
            long impostorsAbove = optCount(item, "impostors_above", at);
            double tar = Double.NaN;
            if (item.has("tar")) {
                tar = item.number("tar");
                if (!(tar >= 0 && tar <= 1)) {
                    throw new ContractException(at + ": tar " + tar + " is not in [0, 1]");
                }
            }
            if (i > 0) {
                Point previous = points.get(i - 1);
                if (!(far < previous.far)) {
                    throw new ContractException(at + ": far " + far + " does not fall below the previous point's "
                            + previous.far + ": points must be sorted by far descending");
                }
                if (threshold < previous.threshold) {
                    throw new ContractException(at + ": threshold " + threshold + " is below the previous point's "
                            + previous.threshold + " at a smaller far: a stricter FAR needs a higher threshold");
                }
            }
            points.add(new Point(far, threshold, impostorsAbove, tar));
        }
        return new OperatingPoints(points, galleries(json, where), json.optString("source", ""),
                optCount(json, "identities", where),
                optCount(json, "faces", where), optCount(json, "genuine_pairs", where),
                optCount(json, "impostor_pairs", where), optCount(json, "min_impostors", where));
    }

    private static List<GalleryPoint> galleries(Json.Obj json, String where) {
        List<GalleryPoint> galleries = new ArrayList<>();
        if (!json.has("identification")) {
            return galleries;
        }
        List<Json.Obj> items = json.objects("identification");
        for (int i = 0; i < items.size(); i++) {
            Json.Obj item = items.get(i);
            String at = where + ".identification[" + i + "]";
            long size = optCount(item, "gallery_size", at);
            double fpir = item.number("fpir");
            double threshold = item.number("threshold");
            if (size < 1 || size > Integer.MAX_VALUE) {
                throw new ContractException(at + ": 'gallery_size' must be a positive integer");
            }
            if (!(fpir > 0 && fpir < 1)) {
                throw new ContractException(at + ": fpir " + fpir + " is not in (0, 1)");
            }
            if (!(threshold >= -1 && threshold <= 1)) {
                throw new ContractException(at + ": threshold " + threshold + " is not a cosine in [-1, 1]");
            }
            galleries.add(new GalleryPoint((int) size, fpir, threshold));
        }
        return galleries;
    }

    /** Parses operating points from JSON text (e.g. a golden fixture's field); {@code source} names it in errors. */
    public static OperatingPoints parse(String text, String source) {
        try {
            return fromJson(Json.Obj.of(Json.parse(text), "operating_points"));
        } catch (ContractException e) {
            throw new ContractException(source + ": " + e.getMessage());
        }
    }

    private static long optCount(Json.Obj json, String key, String where) {
        if (!json.has(key)) {
            return -1;
        }
        double value = json.number(key);
        if (value < 0 || value != Math.rint(value) || value > 9.007199254740992E15) {
            throw new ContractException(where + ": '" + key + "' must be a non-negative integer, got " + value);
        }
        return (long) value;
    }

    /**
     * Threshold for 1:1 verification at a false accept rate.
     *
     * @throws IllegalArgumentException if {@code far} is not in (0, 1)
     * @throws CalibrationRangeException if {@code far} is below the smallest calibrated FAR
     */
    public double verificationThreshold(double far) {
        checkRate("FAR", far);
        Point point = select(far);
        if (point == null) {
            throw new CalibrationRangeException("FAR " + formatG(far) + " is below the calibrated range: the smallest "
                    + "supported FAR is " + formatG(smallestFar()), far, smallestFar(), -1);
        }
        return point.threshold;
    }

    /**
     * Threshold for 1:N identification at a false positive identification rate against a gallery
     * of {@code comparisons} templates (values below 1 count as 1): the verification threshold at
     * the per-comparison FAR {@code fpir / comparisons}, raised to the calibrated gallery's where
     * higher (see the class comment).
     *
     * @throws IllegalArgumentException if {@code fpir} is not in (0, 1)
     * @throws CalibrationRangeException if the gallery is too large for the calibrated range; its
     *     message says how many templates fit
     */
    public double identificationThreshold(double fpir, int comparisons) {
        checkRate("FPIR", fpir);
        int n = Math.max(1, comparisons);
        double far = fpir / n;
        Point point = select(far);
        if (point == null) {
            int most = maxTemplates(fpir);
            throw new CalibrationRangeException("a gallery of " + n + " templates at FPIR " + formatG(fpir)
                    + " needs a per-comparison FAR of " + formatG(far, 2) + ", below the calibrated range (smallest "
                    + formatG(smallestFar(), 2) + "): enrol at most " + most + " templates or raise the FPIR",
                    far, smallestFar(), most);
        }
        GalleryPoint gallery = galleryPoint(fpir, n);
        return gallery == null ? point.threshold : Math.max(point.threshold, gallery.threshold);
    }

    private GalleryPoint galleryPoint(double fpir, int n) {
        double limit = fpir * (1 + FAR_SLACK);
        int size = -1;
        int largest = -1;
        for (GalleryPoint gallery : galleries) {
            if (gallery.fpir <= limit) {
                largest = Math.max(largest, gallery.gallerySize);
                if (gallery.gallerySize >= n && (size < 0 || gallery.gallerySize < size)) {
                    size = gallery.gallerySize;
                }
            }
        }
        size = size < 0 ? largest : size;
        GalleryPoint chosen = null;
        for (GalleryPoint gallery : galleries) {
            if (gallery.gallerySize == size && gallery.fpir <= limit && (chosen == null || gallery.fpir > chosen.fpir)) {
                chosen = gallery;
            }
        }
        return chosen;
    }

    /**
     * The most templates a gallery may hold at {@code fpir}: {@code floor(fpir / smallestFar() * (1 + 1e-9))}
     * (the same slack as the selection, so that e.g. 0.01 / 1e-5 allows 1000, not 999).
     */
    public int maxTemplates(double fpir) {
        checkRate("FPIR", fpir);
        return (int) Math.min(Integer.MAX_VALUE, Math.floor(fpir / smallestFar() * (1 + FAR_SLACK)));
    }

    private Point select(double far) {
        double limit = far * (1 + FAR_SLACK);
        for (Point point : points) { // far descending: the first candidate has the largest far
            if (point.far <= limit) {
                return point;
            }
        }
        return null;
    }

    private static void checkRate(String name, double rate) {
        if (!(rate > 0 && rate < 1)) {
            throw new IllegalArgumentException(name + " must lie in (0, 1), got " + rate);
        }
    }

    /** The smallest calibrated FAR (the last point's). */
    public double smallestFar() {
        return points.get(points.size() - 1).far;
    }

    /** The largest calibrated FAR (the first point's). */
    public double largestFar() {
        return points.get(0).far;
    }

    /** The points, far descending. */
    public List<Point> points() {
        return points;
    }

    /** The open-set gallery points, as exported (empty for an export that calibrated none). */
    public List<GalleryPoint> galleries() {
        return galleries;
    }

    /** What the points were measured on, as exported; empty if not recorded. */
    public String source() {
        return source;
    }

    /** Identities of the calibration set; -1 if not recorded. */
    public long identities() {
        return identities;
    }

    /** Faces of the calibration set; -1 if not recorded. */
    public long faces() {
        return faces;
    }

    /** Genuine pairs of the calibration set; -1 if not recorded. */
    public long genuinePairs() {
        return genuinePairs;
    }

    /** Impostor pairs of the calibration set; -1 if not recorded. */
    public long impostorPairs() {
        return impostorPairs;
    }

    /** Fewest impostors above a point's threshold for the export to keep it; -1 if not recorded. */
    public long minImpostors() {
        return minImpostors;
    }

    /** One line, e.g. {@code 4 points, FAR 0.01 .. 1e-05, 1290000 impostor pairs of 500 identities}. */
    public String summary() {
        StringBuilder out = new StringBuilder();
        out.append(points.size()).append(points.size() == 1 ? " point, FAR " : " points, FAR ")
                .append(formatG(largestFar()));
        if (points.size() > 1) {
            out.append(" .. ").append(formatG(smallestFar()));
        }
        if (impostorPairs >= 0) {
            out.append(", ").append(impostorPairs).append(" impostor pairs");
            if (identities >= 0) {
                out.append(" of ").append(identities).append(" identities");
            }
        }
        return out.toString();
    }

    @Override
    public String toString() {
        return summary();
    }

    /**
     * A number as Python's {@code "%g"} writes it (6 significant digits, trailing zeros dropped,
     * exponent form below 1e-4 and from 1e6), so messages read the same in every client.
     */
    public static String formatG(double value) {
        return formatG(value, 6);
    }

    /** A number as Python's {@code "%.<precision>g"} writes it (e.g. {@code "%.2g"}: 7.8e-06, 0.00099). */
    public static String formatG(double value, int precision) {
        if (precision < 1) {
            throw new IllegalArgumentException("precision must be at least 1, got " + precision);
        }
        if (Double.isNaN(value)) {
            return "nan";
        }
        if (Double.isInfinite(value)) {
            return value > 0 ? "inf" : "-inf";
        }
        if (value == 0) {
            return (1 / value < 0) ? "-0" : "0";
        }
        BigDecimal rounded = new BigDecimal(value).round(new MathContext(precision, RoundingMode.HALF_EVEN));
        int exponent = rounded.precision() - rounded.scale() - 1;
        if (exponent < -4 || exponent >= precision) {
            String mantissa = stripZeros(rounded.movePointLeft(exponent).toPlainString());
            return mantissa + (exponent < 0 ? "e-" : "e+") + (Math.abs(exponent) < 10 ? "0" : "") + Math.abs(exponent);
        }
        return stripZeros(rounded.toPlainString());
    }

    private static String stripZeros(String number) {
        if (number.indexOf('.') < 0) {
            return number;
        }
        int end = number.length();
        while (number.charAt(end - 1) == '0') {
            end--;
        }
        if (number.charAt(end - 1) == '.') {
            end--;
        }
        return number.substring(0, end);
    }
}
