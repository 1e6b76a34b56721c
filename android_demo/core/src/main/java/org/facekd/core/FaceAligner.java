package org.facekd.core;

/**
 * Aligns a face to the standard 5-point ArcFace template with a least-squares similarity
 * transform, as the training crops were made (eyes, nose tip, mouth corners; border reflect).
 *
 * <p>The similarity {@code [a -b tx; b a ty]} minimises {@code sum_i ||A p_i + t - q_i||^2}
 * (closed form, points centred on their means):
 * {@code a = sum(p·q) / sum(|p|^2)}, {@code b = sum(p × q) / sum(|p|^2)}. The warp samples the
 * source bilinearly in floating point at pixel centres mapped through the inverse transform
 * ({@code cv2.warpAffine} semantics, {@code BORDER_REFLECT}); OpenCV's own warp uses 5-bit
 * fixed-point weights, so pixels may differ from a Python crop by about one grey level.
 */
public final class FaceAligner {
    /** Template for a 112×112 crop: left eye, right eye, nose, left and right mouth corner (x, y). */
    private static final float[] ARCFACE_112 = {
        38.2946f, 51.6963f,
        73.5318f, 51.5014f,
        56.0252f, 71.7366f,
        41.5493f, 92.3655f,
        70.7299f, 92.2041f,
    };

    private FaceAligner() {
    }

    /** The template scaled to a {@code size}×{@code size} crop, as 5 (x, y) pairs. */
    public static float[] template(int size) {
        float[] scaled = new float[ARCFACE_112.length];
        for (int i = 0; i < scaled.length; i++) {
            scaled[i] = ARCFACE_112[i] * size / 112f;
        }
        return scaled;
    }

    /**
     * Least-squares similarity mapping {@code source} points onto {@code target} points
     * (flattened (x, y) pairs, at least two points). Returns the 2×3 matrix row-major:
     * {@code {a, -b, tx, b, a, ty}}.
     */
    public static double[] estimateSimilarity(float[] source, float[] target) {
        if (source.length != target.length || source.length < 4 || source.length % 2 != 0) {
            throw new IllegalArgumentException("need matching lists of at least two (x, y) points");
        }
        int n = source.length / 2;
        double sx = 0, sy = 0, tx = 0, ty = 0;
        for (int i = 0; i < n; i++) {
            sx += source[2 * i];
            sy += source[2 * i + 1];
            tx += target[2 * i];
            ty += target[2 * i + 1];
        }
        sx /= n;
        sy /= n;
        tx /= n;
        ty /= n;
        double dotSum = 0, crossSum = 0, normSum = 0;
        for (int i = 0; i < n; i++) {
            double px = source[2 * i] - sx, py = source[2 * i + 1] - sy;
            double qx = target[2 * i] - tx, qy = target[2 * i + 1] - ty;
            dotSum += px * qx + py * qy;
            crossSum += px * qy - py * qx;
            normSum += px * px + py * py;
        }
        if (!(normSum > 0)) {
            throw new IllegalArgumentException("source points must not all coincide");
        }
        double a = dotSum / normSum;
        double b = crossSum / normSum;
        return new double[] {a, -b, tx - (a * sx - b * sy), b, a, ty - (b * sx + a * sy)};
    }

    /** Crops an aligned {@code size}×{@code size} face from ARGB pixels given 5 landmarks. */
    public static int[] align(int[] argb, int width, int height, float[] landmarks, int size) {
        if (landmarks.length != 10) {
            throw new IllegalArgumentException("need 5 landmarks as 10 numbers, got " + landmarks.length);
        }
        return warp(argb, width, height, estimateSimilarity(landmarks, template(size)), size);
    }

    /** Warps ARGB pixels by a 2×3 similarity (source → crop) into a {@code size}² crop. */
    public static int[] warp(int[] argb, int width, int height, double[] matrix, int size) {
        double a = matrix[0], b = matrix[3], tx = matrix[2], ty = matrix[5];
        double det = a * a + b * b;
        if (!(det > 0)) {
            throw new IllegalArgumentException("degenerate transform");
        }
        // Inverse of [a -b; b a] is [a b; -b a] / det.
        int[] out = new int[size * size];
        for (int v = 0; v < size; v++) {
            for (int u = 0; u < size; u++) {
                double du = u - tx, dv = v - ty;
                double x = (a * du + b * dv) / det;
                double y = (-b * du + a * dv) / det;
                out[v * size + u] = sample(argb, width, height, x, y);
            }
        }
        return out;
    }

    private static int sample(int[] argb, int width, int height, double x, double y) {
        int x0 = (int) Math.floor(x), y0 = (int) Math.floor(y);
        double fx = x - x0, fy = y - y0;
        int i00 = reflect(y0, height) * width, i10 = reflect(y0 + 1, height) * width;
        int c0 = reflect(x0, width), c1 = reflect(x0 + 1, width);
        int p00 = argb[i00 + c0], p01 = argb[i00 + c1], p10 = argb[i10 + c0], p11 = argb[i10 + c1];
        int pixel = 0xFF000000;
        for (int shift = 16; shift >= 0; shift -= 8) {
            double top = ((p00 >> shift) & 0xFF) * (1 - fx) + ((p01 >> shift) & 0xFF) * fx;
            double bottom = ((p10 >> shift) & 0xFF) * (1 - fx) + ((p11 >> shift) & 0xFF) * fx;
            int value = (int) Math.round(top * (1 - fy) + bottom * fy);
            pixel |= Math.max(0, Math.min(255, value)) << shift;
        }
        return pixel;
    }

    /** OpenCV BORDER_REFLECT: ...cba|abc...xyz|zyx... */
    static int reflect(int index, int length) {
        if (length == 1) {
            return 0;
        }
        int period = 2 * length;
        int wrapped = ((index % period) + period) % period;
        return wrapped < length ? wrapped : period - 1 - wrapped;
    }
}
