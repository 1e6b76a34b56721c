package org.facekd.core;

import java.util.List;
import java.util.Map;

/**
 * Open-set identification against a {@link Gallery}.
 *
 * <p>A person's score is the best cosine between the probe and any of their templates; the
 * best-scoring person is the answer if {@code score >= threshold} (the same rule the export's
 * golden pairs use for {@code "match"}), otherwise the probe is {@link #UNKNOWN}.
 */
public final class FaceMatcher {
    /** Label shown for a face below the threshold or with an empty gallery. */
    public static final String UNKNOWN = "unknown";

    private final Gallery gallery;
    private final double threshold;

    public FaceMatcher(Gallery gallery, double threshold) {
        if (Double.isNaN(threshold) || threshold < -1 || threshold > 1) {
            throw new IllegalArgumentException("cosine threshold must be in [-1, 1], got " + threshold);
        }
        this.gallery = gallery;
        this.threshold = threshold;
    }

    /** The single verification rule: same person iff {@code cosine >= threshold}. */
    public static boolean isMatch(double cosine, double threshold) {
        return cosine >= threshold;
    }

    public double threshold() {
        return threshold;
    }

    /** Best match of a raw or normalised probe embedding. */
    public Match match(float[] embedding) {
        if (embedding.length != gallery.dimension()) {
            throw new IllegalArgumentException("probe has " + embedding.length + " values, gallery holds "
                    + gallery.dimension() + "-d templates");
        }
        float[] probe = Embeddings.l2Normalize(embedding);
        String bestName = null;
        double bestScore = Double.NEGATIVE_INFINITY;
        for (Map.Entry<String, List<float[]>> person : gallery.snapshot().entrySet()) {
            for (float[] template : person.getValue()) {
                double score = Embeddings.dot(probe, template);
                if (score > bestScore) {
                    bestScore = score;
                    bestName = person.getKey();
                }
            }
        }
        return new Match(bestName, bestScore, threshold);
    }

    /** Outcome of one probe. */
    public static final class Match {
        private final String candidate;
        private final double score;
        private final double threshold;

        Match(String candidate, double score, double threshold) {
            this.candidate = candidate;
            this.score = score;
            this.threshold = threshold;
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

        public double threshold() {
            return threshold;
        }

        @Override
        public String toString() {
            return label() + (candidate == null ? "" : String.format(java.util.Locale.ROOT, " (%s %.3f, threshold %.3f)",
                    candidate, score, threshold));
        }
    }
}
