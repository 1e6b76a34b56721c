package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.Arrays;
import java.util.Map;
import org.junit.jupiter.api.Test;

class LatencyStatsTest {
    // Expected values from NumPy 2.4: np.percentile(x, q), x.mean(), x.std().
    private static final double[] SAMPLES = {12.5, 3.25, 7.0, 9.75, 1.5, 30.0, 4.0, 8.5, 6.25, 11.0, 2.0};

    @Test
    void matchesNumpyLinearPercentiles() {
        LatencyStats stats = LatencyStats.of(SAMPLES);
        assertEquals(11, stats.count());
        assertEquals(8.704545454545455, stats.mean(), 1e-12);
        assertEquals(7.579741376778167, stats.std(), 1e-12);
        assertEquals(1.5, stats.min());
        assertEquals(30.0, stats.max());
        assertEquals(7.0, stats.p50(), 1e-12);
        assertEquals(12.5, stats.p90(), 1e-12);
        assertEquals(28.250000000000007, stats.p99(), 1e-12);
        assertEquals(5.6875, LatencyStats.percentile(SAMPLES, 37.5), 1e-12);
        assertEquals(1.5, LatencyStats.percentile(SAMPLES, 0));
        assertEquals(30.0, LatencyStats.percentile(SAMPLES, 100));
    }

    @Test
    void interpolatesBetweenNeighbours() {
        double[] oneToTen = {10, 9, 8, 7, 6, 5, 4, 3, 2, 1};
        assertEquals(5.5, LatencyStats.percentile(oneToTen, 50), 1e-12);
        assertEquals(9.1, LatencyStats.percentile(oneToTen, 90), 1e-12);
        assertEquals(9.91, LatencyStats.percentile(oneToTen, 99), 1e-12);
        assertEquals(4.2, LatencyStats.of(new double[] {4.2}).p99());
    }

    @Test
    void doesNotReorderTheCallersArray() {
        double[] copy = SAMPLES.clone();
        LatencyStats.of(copy);
        assertEquals(Arrays.toString(SAMPLES), Arrays.toString(copy));
    }

    @Test
    void refusesBadInput() {
        assertThrows(IllegalArgumentException.class, () -> LatencyStats.of(new double[0]));
        assertThrows(IllegalArgumentException.class, () -> LatencyStats.of(new double[] {1, Double.NaN}));
        assertThrows(IllegalArgumentException.class, () -> LatencyStats.percentile(SAMPLES, 101));
    }

    @Test
    void recorderKeepsStageOrderAndSlidingWindow() {
        LatencyRecorder recorder = new LatencyRecorder(3);
        recorder.record("preprocess", 1);
        recorder.record("inference", 10);
        for (double v : new double[] {2, 3, 4, 5}) {
            recorder.record("preprocess", v);
        }
        Map<String, LatencyStats> snapshot = recorder.snapshot();
        assertEquals(Arrays.asList("preprocess", "inference"), recorder.stageNames());
        assertEquals(3, snapshot.get("preprocess").count());
        assertEquals(4.0, snapshot.get("preprocess").mean(), 1e-12);
        assertEquals(3.0, snapshot.get("preprocess").min());
        assertEquals(10.0, snapshot.get("inference").p50());
    }
}
