package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class EmbeddingsTest {
    @Test
    void l2NormaliseGivesUnitLength() {
        float[] unit = Embeddings.l2Normalize(new float[] {3f, 4f});
        assertArrayEquals(new float[] {0.6f, 0.8f}, unit, 1e-7f);
        assertEquals(1.0, Embeddings.dot(unit, unit), 1e-7);
    }

    @Test
    void l2NormaliseRefusesZeroAndNonFinite() {
        assertThrows(IllegalArgumentException.class, () -> Embeddings.l2Normalize(new float[] {0f, 0f}));
        assertThrows(IllegalArgumentException.class, () -> Embeddings.l2Normalize(new float[] {Float.NaN, 1f}));
        assertThrows(IllegalArgumentException.class,
                () -> Embeddings.l2Normalize(new float[] {Float.POSITIVE_INFINITY, 1f}));
    }

    @Test
    void cosineIsScaleInvariantAndBounded() {
        float[] a = {1f, 2f, 3f};
        assertEquals(1.0, Embeddings.cosine(a, new float[] {2f, 4f, 6f}), 1e-12);
        assertEquals(-1.0, Embeddings.cosine(a, new float[] {-1f, -2f, -3f}), 1e-12);
        assertEquals(0.0, Embeddings.cosine(new float[] {1f, 0f}, new float[] {0f, 5f}), 1e-12);
        assertEquals(32.0 / Math.sqrt(14 * 77), Embeddings.cosine(a, new float[] {4f, 5f, 6f}), 1e-12);
    }

    @Test
    void mismatchedLengthsAreRefused() {
        assertThrows(IllegalArgumentException.class, () -> Embeddings.cosine(new float[2], new float[3]));
        assertThrows(IllegalArgumentException.class, () -> Embeddings.cosine(new float[2], new float[2]));
    }
}
