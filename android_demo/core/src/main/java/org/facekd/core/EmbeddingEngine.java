package org.facekd.core;

/**
 * Runs the face model: one preprocessed input tensor in, one raw embedding out.
 *
 * <p>Implementations: LiteRT's CompiledModel on Android, a JNI shim over LiteRT's C API on the
 * JVM (tests). Not thread-safe unless an implementation says so.
 */
public interface EmbeddingEngine extends AutoCloseable {
    /** {@code input} is laid out as the manifest's {@code input.layout}; returns the raw output. */
    float[] embed(float[] input);

    /** Releases native resources; the engine is unusable afterwards. */
    @Override
    void close();
}
