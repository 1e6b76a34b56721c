package org.facekd.core;

/** Vector helpers for face embeddings. */
public final class Embeddings {
    private Embeddings() {
    }

    /** {@code v / ||v||_2}, accumulated in double; a zero or non-finite vector is an error. */
    public static float[] l2Normalize(float[] vector) {
        double norm = Math.sqrt(dot(vector, vector));
        if (!(norm > 0) || Double.isInfinite(norm)) {
            throw new IllegalArgumentException("cannot L2-normalise a vector of norm " + norm);
        }
        float[] out = new float[vector.length];
        for (int i = 0; i < vector.length; i++) {
            out[i] = (float) (vector[i] / norm);
        }
        return out;
    }

    /** {@code sum_i a_i * b_i}, accumulated in double. */
    public static double dot(float[] a, float[] b) {
        if (a.length != b.length) {
            throw new IllegalArgumentException("vector lengths differ: " + a.length + " vs " + b.length);
        }
        double sum = 0;
        for (int i = 0; i < a.length; i++) {
            sum += (double) a[i] * b[i];
        }
        return sum;
    }

    /** Cosine similarity {@code a·b / (||a|| ||b||)}, in [-1, 1]; either vector may be unnormalised. */
    public static double cosine(float[] a, float[] b) {
        double denominator = Math.sqrt(dot(a, a) * dot(b, b));
        if (!(denominator > 0)) {
            throw new IllegalArgumentException("cosine of a zero vector is undefined");
        }
        return Math.max(-1.0, Math.min(1.0, dot(a, b) / denominator));
    }
}
