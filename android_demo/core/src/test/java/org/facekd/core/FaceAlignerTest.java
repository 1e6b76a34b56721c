package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

class FaceAlignerTest {
    private static float[] transform(float[] points, double scale, double angle, double tx, double ty) {
        float[] out = new float[points.length];
        double a = scale * Math.cos(angle), b = scale * Math.sin(angle);
        for (int i = 0; i < points.length; i += 2) {
            out[i] = (float) (a * points[i] - b * points[i + 1] + tx);
            out[i + 1] = (float) (b * points[i] + a * points[i + 1] + ty);
        }
        return out;
    }

    @Test
    void recoversAnExactSimilarity() {
        float[] source = {10f, 20f, 80f, 25f, 45f, 60f, 20f, 90f, 75f, 95f};
        float[] target = transform(source, 0.7, 0.3, 12.5, -4.0);
        double[] m = FaceAligner.estimateSimilarity(source, target);
        double a = 0.7 * Math.cos(0.3), b = 0.7 * Math.sin(0.3);
        assertArrayEquals(new double[] {a, -b, 12.5, b, a, -4.0}, m, 1e-4);
    }

    @Test
    void leastSquaresBeatsNearbyTransforms() {
        Random random = new Random(3);
        float[] source = FaceAligner.template(112);
        float[] target = transform(source, 1.3, -0.2, 5, 7);
        for (int i = 0; i < target.length; i++) {
            target[i] += (float) random.nextGaussian() * 2f;
        }
        double[] best = FaceAligner.estimateSimilarity(source, target);
        double bestError = squaredError(best, source, target);
        double[][] steps = {{1e-3, 0, 0, 0}, {0, 1e-3, 0, 0}, {0, 0, 0.05, 0}, {0, 0, 0, 0.05}};
        for (double[] step : steps) {
            for (int sign = -1; sign <= 1; sign += 2) {
                double a = best[0] + sign * step[0], b = best[3] + sign * step[1];
                double[] nearby = {a, -b, best[2] + sign * step[2], b, a, best[5] + sign * step[3]};
                assertTrue(squaredError(nearby, source, target) > bestError);
            }
        }
    }

    private static double squaredError(double[] m, float[] source, float[] target) {
        double sum = 0;
        for (int i = 0; i < source.length; i += 2) {
            double x = m[0] * source[i] + m[1] * source[i + 1] + m[2] - target[i];
            double y = m[3] * source[i] + m[4] * source[i + 1] + m[5] - target[i + 1];
            sum += x * x + y * y;
        }
        return sum;
    }

    @Test
    void alignedCropOfAShiftedFaceIsTheFace() {
        Random random = new Random(5);
        int size = 112;
        int[] face = new int[size * size];
        for (int i = 0; i < face.length; i++) {
            face[i] = 0xFF000000 | random.nextInt(1 << 24);
        }
        int width = 150, height = 140, dx = 17, dy = 9;
        int[] frame = new int[width * height];
        for (int y = 0; y < size; y++) {
            System.arraycopy(face, y * size, frame, (y + dy) * width + dx, size);
        }
        float[] landmarks = transform(FaceAligner.template(size), 1, 0, dx, dy);
        assertArrayEquals(face, FaceAligner.align(frame, width, height, landmarks, size));
        assertArrayEquals(face, FaceAligner.align(face, size, size, FaceAligner.template(size), size));
    }

    @Test
    void halfScaleAveragesPixelPairs() {
        // A 4×2 image of columns 0, 100, 200, 50 (grey), landmarks at twice the template: the crop samples
        // between source pixels, so each output value is the mean of its two neighbours.
        int[] image = new int[4 * 2];
        int[] grey = {0, 100, 200, 50};
        for (int i = 0; i < image.length; i++) {
            int g = grey[i % 4];
            image[i] = 0xFF000000 | g << 16 | g << 8 | g;
        }
        double[] halve = {0.5, 0, -0.25, 0, 0.5, -0.25};
        int[] crop = FaceAligner.warp(image, 4, 2, halve, 2);
        assertEquals(50, crop[0] & 0xFF);
        assertEquals(125, crop[1] & 0xFF);
        assertEquals(0xFF, crop[0] >>> 24);
    }

    @Test
    void reflectsLikeOpenCvBorderReflect() {
        int[] expected = {1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0};
        for (int i = -2; i <= 8; i++) {
            assertEquals(expected[i + 2], FaceAligner.reflect(i, 4), "index " + i);
        }
        assertEquals(0, FaceAligner.reflect(-5, 1));
    }

    @Test
    void templateScalesWithCropSize() {
        float[] t = FaceAligner.template(224);
        assertEquals(2 * 38.2946f, t[0], 1e-4f);
        assertEquals(2 * 92.2041f, t[9], 1e-4f);
    }

    @Test
    void refusesDegenerateInput() {
        assertThrows(IllegalArgumentException.class,
                () -> FaceAligner.estimateSimilarity(new float[] {1, 1, 1, 1}, new float[] {0, 0, 5, 5}));
        assertThrows(IllegalArgumentException.class, () -> FaceAligner.align(new int[4], 2, 2, new float[8], 112));
    }
}
