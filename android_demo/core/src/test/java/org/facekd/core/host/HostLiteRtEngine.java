package org.facekd.core.host;

import java.nio.file.Path;
import org.facekd.core.EmbeddingEngine;

/**
 * Runs a .tflite on the JVM through a JNI shim over LiteRT's C API (CPU), for tests only.
 *
 * <p>The shim library's absolute path comes from the system property
 * {@value #LIBRARY_PROPERTY}; run_tests.sh builds it against the venv's {@code libLiteRt.so}.
 */
public final class HostLiteRtEngine implements EmbeddingEngine {
    /** System property holding the absolute path of the built shim library. */
    public static final String LIBRARY_PROPERTY = "facekd.litert.jni";

    private long handle;

    private HostLiteRtEngine(long handle) {
        this.handle = handle;
    }

    /** True when run_tests.sh built the shim (the property names an existing file). */
    public static boolean isAvailable() {
        String library = System.getProperty(LIBRARY_PROPERTY);
        return library != null && !library.isEmpty() && new java.io.File(library).isFile();
    }

    /** Compiles {@code model} for the CPU. */
    public static HostLiteRtEngine open(Path model) {
        loadLibrary();
        return new HostLiteRtEngine(nativeOpen(model.toAbsolutePath().toString()));
    }

    private static synchronized void loadLibrary() {
        if (!isAvailable()) {
            throw new IllegalStateException("LiteRT JNI shim not built: set -D" + LIBRARY_PROPERTY
                    + "=<path to libfacekd_litert_jni.so> (android_demo/run_tests.sh does)");
        }
        System.load(System.getProperty(LIBRARY_PROPERTY));
    }

    /** The model's input dimensions as LiteRT reports them. */
    public int[] inputShape() {
        return nativeInputShape(checkOpen());
    }

    public int[] outputShape() {
        return nativeOutputShape(checkOpen());
    }

    @Override
    public float[] embed(float[] input) {
        return nativeRun(checkOpen(), input);
    }

    @Override
    public void close() {
        if (handle != 0) {
            nativeClose(handle);
            handle = 0;
        }
    }

    private long checkOpen() {
        if (handle == 0) {
            throw new IllegalStateException("engine is closed");
        }
        return handle;
    }

    private static native long nativeOpen(String modelPath);

    private static native int[] nativeInputShape(long handle);

    private static native int[] nativeOutputShape(long handle);

    private static native float[] nativeRun(long handle, float[] input);

    private static native void nativeClose(long handle);
}
