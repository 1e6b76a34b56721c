package org.facekd.core.golden;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.facekd.core.ImagePreprocessor;
import org.facekd.core.ModelManifest;
import org.facekd.core.PreprocessSpec;
import org.facekd.core.TensorLayout;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestReporter;

/**
 * Java preprocessing (PNG → ImageIO → ARGB ints → tensor) against the tensors Python wrote.
 *
 * <p>Tolerances: 1e-5 for images already at the model size (float32 arithmetic is identical, so
 * the measured difference is 0); 1e-2 for images that need resizing, a bit above one grey level
 * (1/127.5 ≈ 0.0078) to allow for OpenCV builds whose fixed-point rounding differs. With
 * {@link org.facekd.core.BilinearResize} emulating opencv-python 4.14 the measured difference is 0.
 */
class GoldenPreprocessingTest {
    static final double SAME_SIZE_TOLERANCE = 1e-5;
    static final double RESIZE_TOLERANCE = 1e-2;

    private static GoldenSet golden;
    private static ExportFolder export;

    @BeforeAll
    static void load() throws IOException {
        export = ExportFolder.configured().orElse(null);
        if (export != null) {
            golden = GoldenSet.read(export.goldenDir());
        }
    }

    private static void requireExport() {
        assumeTrue(export != null, "no export folder: pass one to run_tests.sh or set FACEKD_EXPORT");
    }

    private static double maxAbsDiff(float[] a, float[] b) {
        assertEquals(a.length, b.length, "tensor length");
        double max = 0;
        for (int i = 0; i < a.length; i++) {
            max = Math.max(max, Math.abs(a[i] - b[i]));
        }
        return max;
    }

    private static double[] measure(boolean resized) throws IOException {
        ImagePreprocessor preprocessor = new ImagePreprocessor(golden.preprocess, TensorLayout.NCHW);
        List<Double> diffs = new ArrayList<>();
        for (GoldenSet.Item item : golden.items) {
            TestImages.Argb image = TestImages.readPng(golden.dir.resolve(item.image));
            boolean needsResize = image.width != golden.preprocess.size() || image.height != golden.preprocess.size();
            if (needsResize == resized) {
                float[] javaTensor = preprocessor.toTensor(image.pixels, image.width, image.height);
                diffs.add(maxAbsDiff(javaTensor, TestImages.readFloat32(golden.dir.resolve(item.input))));
            }
        }
        return diffs.stream().mapToDouble(Double::doubleValue).toArray();
    }

    @Test
    void modelSizedImagesGivePythonsTensors(TestReporter reporter) throws IOException {
        requireExport();
        double[] diffs = measure(false);
        assertTrue(diffs.length > 0, "golden set has no image at the model size");
        double worst = java.util.Arrays.stream(diffs).max().getAsDouble();
        reporter.publishEntry("max_abs_diff_same_size", String.format(Locale.ROOT, "%.2e over %d images", worst,
                diffs.length));
        assertTrue(worst <= SAME_SIZE_TOLERANCE, "max abs diff " + worst + " > " + SAME_SIZE_TOLERANCE);
    }

    @Test
    void resizedImagesGivePythonsTensors(TestReporter reporter) throws IOException {
        requireExport();
        double[] diffs = measure(true);
        assumeTrue(diffs.length > 0, "golden set has no image that needs resizing");
        double worst = java.util.Arrays.stream(diffs).max().getAsDouble();
        reporter.publishEntry("max_abs_diff_resized", String.format(Locale.ROOT, "%.2e over %d images", worst,
                diffs.length));
        assertTrue(worst <= RESIZE_TOLERANCE, "max abs diff " + worst + " > " + RESIZE_TOLERANCE);
    }

    @Test
    void everyManifestUsesTheGoldenPreprocessing() throws IOException {
        requireExport();
        List<Path> artifacts = export.tfliteArtifacts();
        assertTrue(!artifacts.isEmpty(), "no tflite-* artifact with a manifest.json in " + export.root());
        for (Path artifact : artifacts) {
            PreprocessSpec spec = ModelManifest.read(artifact.resolve("manifest.json")).preprocess();
            String where = artifact.getFileName().toString();
            assertEquals(golden.preprocess.size(), spec.size(), where);
            assertEquals(golden.preprocess.channelOrder(), spec.channelOrder(), where);
            assertArrayEquals(golden.preprocess.mean(), spec.mean(), where);
            assertArrayEquals(golden.preprocess.std(), spec.std(), where);
        }
    }
}
