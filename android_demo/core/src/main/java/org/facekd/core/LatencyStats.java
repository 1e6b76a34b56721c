package org.facekd.core;

import java.util.Arrays;

/**
 * Summary of latency samples (milliseconds): n, mean, std, min, max and percentiles.
 *
 * <p>Percentiles follow NumPy's default {@code np.percentile(..., method="linear")}: with the
 * samples sorted as {@code x_0..x_{n-1}}, {@code p(q) = x_i + (x_{i+1} - x_i) * f} where
 * {@code i + f = q / 100 * (n - 1)}. {@code std} is the population standard deviation (NumPy's
 * default {@code ddof=0}).
 */
public final class LatencyStats {
    private final int count;
    private final double mean;
    private final double std;
    private final double min;
    private final double max;
    private final double p50;
    private final double p90;
    private final double p99;

    private LatencyStats(double[] sorted) {
        count = sorted.length;
        double sum = 0;
        for (double v : sorted) {
            sum += v;
        }
        mean = sum / count;
        double squares = 0;
        for (double v : sorted) {
            squares += (v - mean) * (v - mean);
        }
        std = Math.sqrt(squares / count);
        min = sorted[0];
        max = sorted[count - 1];
        p50 = percentileOfSorted(sorted, 50);
        p90 = percentileOfSorted(sorted, 90);
        p99 = percentileOfSorted(sorted, 99);
    }

    /** Summarises at least one finite sample. */
    public static LatencyStats of(double[] samplesMs) {
        if (samplesMs.length == 0) {
            throw new IllegalArgumentException("no latency samples");
        }
        double[] sorted = samplesMs.clone();
        for (double v : sorted) {
            if (Double.isNaN(v) || Double.isInfinite(v)) {
                throw new IllegalArgumentException("latency samples must be finite, got " + v);
            }
        }
        Arrays.sort(sorted);
        return new LatencyStats(sorted);
    }

    /** NumPy-style linear percentile, {@code q} in [0, 100]. */
    public static double percentile(double[] samples, double q) {
        if (samples.length == 0) {
            throw new IllegalArgumentException("no samples");
        }
        double[] sorted = samples.clone();
        Arrays.sort(sorted);
        return percentileOfSorted(sorted, q);
    }

    private static double percentileOfSorted(double[] sorted, double q) {
        if (!(q >= 0 && q <= 100)) {
            throw new IllegalArgumentException("percentile must be in [0, 100], got " + q);
        }
        double position = q / 100.0 * (sorted.length - 1);
        int lower = (int) Math.floor(position);
        int upper = Math.min(lower + 1, sorted.length - 1);
        double fraction = position - lower;
        return sorted[lower] + (sorted[upper] - sorted[lower]) * fraction;
    }

    public int count() {
        return count;
    }

    public double mean() {
        return mean;
    }

    public double std() {
        return std;
    }

    public double min() {
        return min;
    }

    public double max() {
        return max;
    }

    public double p50() {
        return p50;
    }

    public double p90() {
        return p90;
    }

    public double p99() {
        return p99;
    }

    @Override
    public String toString() {
        return String.format(java.util.Locale.ROOT, "n=%d mean=%.2f p50=%.2f p90=%.2f p99=%.2f ms",
                count, mean, p50, p90, p99);
    }
}
