package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.Arrays;
import org.junit.jupiter.api.Test;

class FaceRecognizerTest {
    /** Embeds a tensor as its per-channel sums (NCHW), padded with a constant to the embedding size. */
    private static final class ChannelSumEngine implements EmbeddingEngine {
        private final int outputLength;
        float[] lastInput;

        ChannelSumEngine(int outputLength) {
            this.outputLength = outputLength;
        }

        @Override
        public float[] embed(float[] input) {
            lastInput = input;
            float[] out = new float[outputLength];
            Arrays.fill(out, 1f);
            int plane = input.length / 3;
            for (int c = 0; c < 3; c++) {
                float sum = 0;
                for (int i = 0; i < plane; i++) {
                    sum += input[c * plane + i];
                }
                out[c] = sum;
            }
            return out;
        }

        @Override
        public void close() {
        }
    }

    private static ModelManifest manifest() {
        return ModelManifest.parse(ModelManifestTest.manifest("NCHW", "[1, 3, 112, 112]", "ab".repeat(32), "0.9"), "m");
    }

    private static int[] solid(int rgb, int count) {
        int[] pixels = new int[count];
        Arrays.fill(pixels, 0xFF000000 | rgb);
        return pixels;
    }

    @Test
    void embedsNormalisedAndTimesEachStage() {
        ChannelSumEngine engine = new ChannelSumEngine(128);
        LatencyRecorder latency = new LatencyRecorder(10);
        FaceRecognizer recognizer = new FaceRecognizer(manifest(), engine, latency);
        float[] embedding = recognizer.embed(solid(0xFFFFFF, 112 * 112), 112, 112);
        assertEquals(1.0, Embeddings.dot(embedding, embedding), 1e-6);
        assertEquals(3 * 112 * 112, engine.lastInput.length);
        assertEquals(1f, engine.lastInput[0], "white is +1 after (x - 127.5) / 127.5");

        Gallery gallery = new Gallery("ab".repeat(32), 128);
        gallery.enrol("white", embedding);
        FaceMatcher matcher = new FaceMatcher(gallery, 0.9);
        FaceRecognizer.Recognition white = recognizer.identify(solid(0xFFFFFF, 64 * 64), 64, 64, matcher);
        assertEquals("white", white.match().label());
        assertArrayEquals(embedding, white.embedding(), 1e-6f);
        assertEquals(FaceMatcher.UNKNOWN,
                recognizer.identify(solid(0x000000, 112 * 112), 112, 112, matcher).match().label());
        assertEquals(Arrays.asList(FaceRecognizer.STAGE_PREPROCESS, FaceRecognizer.STAGE_INFERENCE,
                FaceRecognizer.STAGE_MATCH), latency.stageNames());
        assertEquals(3, latency.snapshot().get(FaceRecognizer.STAGE_INFERENCE).count());
        assertEquals(2, latency.snapshot().get(FaceRecognizer.STAGE_MATCH).count());
    }

    @Test
    void wrongOutputLengthIsAContractError() {
        FaceRecognizer recognizer = new FaceRecognizer(manifest(), new ChannelSumEngine(64), new LatencyRecorder(1));
        ContractException error = assertThrows(ContractException.class,
                () -> recognizer.embed(solid(0x808080, 112 * 112), 112, 112));
        assertEquals("model returned 64 values, manifest embedding_size is 128", error.getMessage());
    }

    @Test
    void feedsTheArtifactLayout() {
        ModelManifest nhwc = ModelManifest.parse(
                ModelManifestTest.manifest("NHWC", "[1, 112, 112, 3]", "ab".repeat(32), "0.9"), "m");
        ChannelSumEngine engine = new ChannelSumEngine(128);
        new FaceRecognizer(nhwc, engine, new LatencyRecorder(1)).embed(solid(0xFF0000, 112 * 112), 112, 112);
        assertArrayEquals(new float[] {1f, -1f, -1f}, Arrays.copyOf(engine.lastInput, 3));
    }
}
