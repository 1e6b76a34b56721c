package org.facekd.core.golden;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.facekd.core.Embeddings;
import org.facekd.core.FaceMatcher;
import org.facekd.core.Gallery;
import org.facekd.core.ImagePreprocessor;
import org.facekd.core.LatencyStats;
import org.facekd.core.ModelManifest;
import org.facekd.core.host.HostLiteRtEngine;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestReporter;

/**
 * The Java path end to end on the exported .tflite: PNG → Java preprocessing → LiteRT (JNI shim)
 * → L2 normalise, against the PyTorch embeddings and pair decisions in golden.json.
 *
 * <p>Minimum cosine to the PyTorch embedding: 0.999 for fp32, 0.995 for fp16 and 0.98 for other
 * (integer-quantised) precisions. fp32 may flip no golden pair decision; a quantised artifact may
 * flip only pairs whose PyTorch cosine lies within {@value #QUANTISED_FLIP_MARGIN} of the threshold.
 * Quantised artifacts whose manifest status is not "ok" (failed the export's parity gate) are skipped.
 */
class GoldenEmbeddingTest {
    static final double FP32_MIN_COSINE = 0.999;
    static final double FP16_MIN_COSINE = 0.995;
    static final double QUANTISED_MIN_COSINE = 0.98;
    static final double QUANTISED_FLIP_MARGIN = 0.05;
    private static final int LATENCY_WARMUP = 3;
    private static final int LATENCY_RUNS = 30;

    private static ExportFolder export;
    private static GoldenSet golden;
    private static final Map<Path, ArtifactRun> RUNS = new HashMap<>();

    /** Java embeddings of every golden item through one artifact. */
    private static final class ArtifactRun {
        final String name;
        final ModelManifest manifest;
        final int[] engineInputShape;
        final int[] engineOutputShape;
        final List<float[]> embeddings = new ArrayList<>();
        final LatencyStats latency;

        ArtifactRun(Path artifact) throws IOException {
            name = artifact.getFileName().toString();
            manifest = ModelManifest.read(artifact.resolve("manifest.json"));
            Path model = artifact.resolve(manifest.file());
            manifest.verifyModelFile(model);
            ImagePreprocessor preprocessor = manifest.preprocessor();
            try (HostLiteRtEngine engine = HostLiteRtEngine.open(model)) {
                engineInputShape = engine.inputShape();
                engineOutputShape = engine.outputShape();
                float[] firstInput = null;
                for (GoldenSet.Item item : golden.items) {
                    TestImages.Argb image = TestImages.readPng(golden.dir.resolve(item.image));
                    float[] input = preprocessor.toTensor(image.pixels, image.width, image.height);
                    firstInput = firstInput == null ? input : firstInput;
                    embeddings.add(Embeddings.l2Normalize(engine.embed(input)));
                }
                double[] millis = new double[LATENCY_RUNS];
                for (int i = -LATENCY_WARMUP; i < LATENCY_RUNS; i++) {
                    long start = System.nanoTime();
                    engine.embed(firstInput);
                    if (i >= 0) {
                        millis[i] = (System.nanoTime() - start) / 1e6;
                    }
                }
                latency = LatencyStats.of(millis);
            }
        }

        double minCosineToGolden() {
            double min = 1;
            for (int i = 0; i < embeddings.size(); i++) {
                min = Math.min(min, Embeddings.cosine(embeddings.get(i), golden.items.get(i).embedding));
            }
            return min;
        }

        /** Golden pairs whose decision with these embeddings differs from golden.json's "match". */
        List<GoldenSet.Pair> flippedPairs() {
            List<GoldenSet.Pair> flipped = new ArrayList<>();
            double threshold = manifest.threshold();
            for (GoldenSet.Pair pair : golden.pairs) {
                double cosine = Embeddings.cosine(embeddings.get(pair.a), embeddings.get(pair.b));
                if (FaceMatcher.isMatch(cosine, threshold) != pair.match) {
                    flipped.add(pair);
                }
            }
            return flipped;
        }
    }

    @BeforeAll
    static void load() throws IOException {
        export = ExportFolder.configured().orElse(null);
        if (export != null) {
            golden = GoldenSet.read(export.goldenDir());
            assertTrue(HostLiteRtEngine.isAvailable(), "an export folder was given but the LiteRT JNI shim is not "
                    + "built: run android_demo/run_tests.sh, which builds it");
        }
    }

    private static ArtifactRun run(Path artifact) throws IOException {
        ArtifactRun cached = RUNS.get(artifact);
        if (cached == null) {
            cached = new ArtifactRun(artifact);
            RUNS.put(artifact, cached);
        }
        return cached;
    }

    /** Runs of every fp32 tflite artifact (at least one must exist). */
    private static List<ArtifactRun> fp32Runs() throws IOException {
        assumeTrue(export != null, "no export folder: pass one to run_tests.sh or set FACEKD_EXPORT");
        List<ArtifactRun> runs = new ArrayList<>();
        for (Path artifact : export.tfliteArtifacts()) {
            if ("fp32".equals(ModelManifest.read(artifact.resolve("manifest.json")).precision())) {
                runs.add(run(artifact));
            }
        }
        assertTrue(!runs.isEmpty(), "no fp32 tflite artifact in " + export.root());
        return runs;
    }

    @Test
    void engineSeesTheManifestShapes() throws IOException {
        assumeTrue(export != null, "no export folder: pass one to run_tests.sh or set FACEKD_EXPORT");
        for (Path artifact : export.tfliteArtifacts()) {
            ArtifactRun run = run(artifact);
            int[] expected = run.manifest.inputShape();
            expected[0] = expected[0] == -1 ? 1 : expected[0];
            assertArrayEquals(expected, run.engineInputShape, run.name + " input shape");
            assertEquals(run.manifest.embeddingSize(), run.engineOutputShape[run.engineOutputShape.length - 1],
                    run.name + " output size");
        }
    }

    @Test
    void fp32EmbeddingsMatchPyTorch(TestReporter reporter) throws IOException {
        for (ArtifactRun run : fp32Runs()) {
            double minCosine = run.minCosineToGolden();
            reporter.publishEntry(run.name + "_min_cosine", String.format(Locale.ROOT, "%.6f over %d images",
                    minCosine, golden.items.size()));
            reporter.publishEntry(run.name + "_host_latency", run.latency.toString());
            assertTrue(minCosine >= FP32_MIN_COSINE, run.name + " min cosine " + minCosine + " < " + FP32_MIN_COSINE);
        }
    }

    @Test
    void fp32DecisionsMatchGoldenPairs() throws IOException {
        List<ArtifactRun> runs = fp32Runs();
        assertTrue(!golden.pairs.isEmpty(), "golden.json has no pairs");
        for (ArtifactRun run : runs) {
            assertEquals(golden.threshold, run.manifest.threshold(), 1e-9,
                    run.name + ": manifest and golden.json thresholds differ");
            List<GoldenSet.Pair> flipped = run.flippedPairs();
            assertTrue(flipped.isEmpty(), run.name + ": " + flipped.size() + " of " + golden.pairs.size()
                    + " pair decisions flipped, e.g. ("
                    + (flipped.isEmpty() ? "" : flipped.get(0).a + ", " + flipped.get(0).b) + ")");
        }
    }

    @Test
    void fp32MatcherIdentifiesLikePyTorch() throws IOException {
        for (ArtifactRun run : fp32Runs()) {
            Map<String, String> expected = identifyLeaveFirstOut(goldenEmbeddings(), run.manifest);
            assumeTrue(!expected.isEmpty(), "golden set has no identity with two or more images");
            assertEquals(expected, identifyLeaveFirstOut(run.embeddings, run.manifest), run.name);
        }
    }

    /** Enrols each identity's first image, then identifies every other image: image → label. */
    private static Map<String, String> identifyLeaveFirstOut(List<float[]> embeddings, ModelManifest manifest) {
        Gallery gallery = new Gallery(manifest.sha256(), manifest.embeddingSize());
        List<Integer> probes = new ArrayList<>();
        for (int i = 0; i < golden.items.size(); i++) {
            String identity = golden.items.get(i).identity;
            if (gallery.templateCount(identity) == 0) {
                gallery.enrol(identity, embeddings.get(i));
            } else {
                probes.add(i);
            }
        }
        FaceMatcher matcher = new FaceMatcher(gallery, manifest.threshold());
        Map<String, String> labels = new LinkedHashMap<>();
        for (int i : probes) {
            labels.put(golden.items.get(i).image, matcher.match(embeddings.get(i)).label());
        }
        return labels;
    }

    private static List<float[]> goldenEmbeddings() {
        List<float[]> out = new ArrayList<>();
        for (GoldenSet.Item item : golden.items) {
            out.add(item.embedding);
        }
        return out;
    }

    @Test
    void quantisedArtifactsStayWithinTolerance(TestReporter reporter) throws IOException {
        assumeTrue(export != null, "no export folder: pass one to run_tests.sh or set FACEKD_EXPORT");
        List<String> checked = new ArrayList<>();
        List<String> skipped = new ArrayList<>();
        for (Path artifact : export.tfliteArtifacts()) {
            ModelManifest manifest = ModelManifest.read(artifact.resolve("manifest.json"));
            if ("fp32".equals(manifest.precision())) {
                continue;
            }
            if (!manifest.isOk()) {
                skipped.add(artifact.getFileName() + " (status " + manifest.status() + ": " + manifest.reason() + ")");
                continue;
            }
            ArtifactRun run = run(artifact);
            double minimum = "fp16".equals(manifest.precision()) ? FP16_MIN_COSINE : QUANTISED_MIN_COSINE;
            double minCosine = run.minCosineToGolden();
            reporter.publishEntry(run.name + "_min_cosine", String.format(Locale.ROOT, "%.6f", minCosine));
            reporter.publishEntry(run.name + "_host_latency", run.latency.toString());
            assertTrue(minCosine >= minimum, run.name + " min cosine " + minCosine + " < " + minimum);
            for (GoldenSet.Pair pair : run.flippedPairs()) {
                assertTrue(Math.abs(pair.cosine - manifest.threshold()) <= QUANTISED_FLIP_MARGIN, run.name
                        + " flipped pair (" + pair.a + ", " + pair.b + ") with PyTorch cosine " + pair.cosine
                        + ", far from threshold " + manifest.threshold());
            }
            checked.add(run.name);
        }
        if (!skipped.isEmpty()) {
            reporter.publishEntry("quantised_skipped", String.join("; ", skipped));
        }
        assumeTrue(!checked.isEmpty(), "no quantised tflite artifact with status ok" + (skipped.isEmpty() ? ""
                : " (skipped: " + String.join("; ", skipped) + ")"));
    }
}
