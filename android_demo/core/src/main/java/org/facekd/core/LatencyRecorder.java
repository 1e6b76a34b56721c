package org.facekd.core;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Per-stage latency over a sliding window of the most recent samples (thread-safe).
 *
 * <p>Stages keep the order in which they were first recorded, so an overlay lists them in
 * pipeline order.
 */
public final class LatencyRecorder {
    private final int window;
    private final Map<String, Ring> stages = new LinkedHashMap<>();

    /** @param window how many recent samples per stage the statistics cover */
    public LatencyRecorder(int window) {
        if (window <= 0) {
            throw new IllegalArgumentException("window must be positive, got " + window);
        }
        this.window = window;
    }

    /** Records {@code System.nanoTime() - startNanos} for {@code stage}. */
    public void recordSince(String stage, long startNanos) {
        record(stage, (System.nanoTime() - startNanos) / 1e6);
    }

    public synchronized void record(String stage, double millis) {
        stages.computeIfAbsent(stage, name -> new Ring(window)).add(millis);
    }

    /** Statistics of every stage with at least one sample, in pipeline order. */
    public synchronized Map<String, LatencyStats> snapshot() {
        Map<String, LatencyStats> out = new LinkedHashMap<>();
        for (Map.Entry<String, Ring> entry : stages.entrySet()) {
            out.put(entry.getKey(), LatencyStats.of(entry.getValue().values()));
        }
        return out;
    }

    public synchronized List<String> stageNames() {
        return new ArrayList<>(stages.keySet());
    }

    private static final class Ring {
        private final double[] samples;
        private int next;
        private int size;

        Ring(int capacity) {
            samples = new double[capacity];
        }

        void add(double value) {
            samples[next] = value;
            next = (next + 1) % samples.length;
            size = Math.min(size + 1, samples.length);
        }

        double[] values() {
            double[] out = new double[size];
            for (int i = 0; i < size; i++) {
                out[i] = samples[(next - size + i + samples.length) % samples.length];
            }
            return out;
        }
    }
}
