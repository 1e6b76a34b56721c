package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ModelManifestTest {
    private static final String SHA = "ab".repeat(32);

    static String manifest(String layout, String shape, String sha, String threshold) {
        return "{\"schema_version\": 1, \"format\": \"tflite\", \"precision\": \"fp32\", \"file\": \"model.tflite\","
                + " \"sha256\": \"" + sha + "\","
                + " \"input\": {\"name\": \"x\", \"shape\": " + shape + ", \"layout\": \"" + layout + "\","
                + " \"dtype\": \"float32\"},"
                + " \"output\": {\"name\": \"y\", \"shape\": [1, 128]},"
                + " \"preprocess\": {\"size\": 112, \"channel_order\": \"RGB\", \"mean\": [127.5, 127.5, 127.5],"
                + " \"std\": [127.5, 127.5, 127.5], \"layout\": \"NCHW\", \"dtype\": \"float32\","
                + " \"resize\": \"bilinear_half_pixel\"},"
                + " \"embedding_size\": 128, \"threshold\": " + threshold + ", \"status\": \"ok\","
                + " \"parity\": {\"mean_cos\": 0.9999, \"worst_cos\": 0.998, \"flip_rate\": 0.0}}";
    }

    @Test
    void parsesTheExportContract() {
        ModelManifest m = ModelManifest.parse(manifest("NHWC", "[1, 112, 112, 3]", SHA, "0.3125"), "manifest.json");
        assertEquals("tflite", m.format());
        assertEquals("fp32", m.precision());
        assertEquals("model.tflite", m.file());
        assertEquals(SHA, m.sha256());
        assertSame(TensorLayout.NHWC, m.inputLayout());
        assertSame(TensorLayout.NCHW, m.preprocess().layout());
        assertSame(TensorLayout.NHWC, m.preprocessor().outputLayout(), "input.layout wins over preprocess.layout");
        assertArrayEquals(new int[] {1, 112, 112, 3}, m.inputShape());
        assertEquals(128, m.embeddingSize());
        assertEquals(0.3125, m.threshold());
        assertTrue(m.isOk());
        assertEquals(0.998, m.parity().get("worst_cos"));
    }

    @Test
    void acceptsDynamicBatch() {
        ModelManifest m = ModelManifest.parse(manifest("NCHW", "[null, 3, 112, 112]", SHA, "0.3"), "m");
        assertArrayEquals(new int[] {-1, 3, 112, 112}, m.inputShape());
    }

    @Test
    void missingThresholdIsAnErrorOnlyWhenUsed() {
        ModelManifest m = ModelManifest.parse(manifest("NCHW", "[1, 3, 112, 112]", SHA, "null"), "m");
        assertFalse(m.hasThreshold());
        ContractException error = assertThrows(ContractException.class, m::threshold);
        assertTrue(error.getMessage().contains("no threshold"), error.getMessage());
    }

    @Test
    void refusesInconsistentOrIncompleteManifests() {
        assertMessage("does not fit NCHW", manifest("NCHW", "[1, 112, 112, 3]", SHA, "0.3"));
        assertMessage("'input.layout' must be", manifest("CHW", "[1, 3, 112, 112]", SHA, "0.3"));
        assertMessage("'sha256' must be 64 hex digits", manifest("NCHW", "[1, 3, 112, 112]", "abc", "0.3"));
        assertMessage("'format' is missing", manifest("NCHW", "[1, 3, 112, 112]", SHA, "0.3")
                .replace("\"format\": \"tflite\",", ""));
        assertMessage("does not match embedding_size", manifest("NCHW", "[1, 3, 112, 112]", SHA, "0.3")
                .replace("\"embedding_size\": 128", "\"embedding_size\": 512"));
        assertMessage("input dtype \"int8\" is not supported", manifest("NCHW", "[1, 3, 112, 112]", SHA, "0.3")
                .replace("\"dtype\": \"float32\"},", "\"dtype\": \"int8\"},"));
        assertMessage("output dtype \"int8\" is not supported", manifest("NCHW", "[1, 3, 112, 112]", SHA, "0.3")
                .replace("\"shape\": [1, 128]}", "\"shape\": [1, 128], \"dtype\": \"int8\"}"));
        assertMessage("unexpected end of input", "{\"format\": ");
    }

    private static void assertMessage(String fragment, String text) {
        ContractException error = assertThrows(ContractException.class, () -> ModelManifest.parse(text, "bad.json"));
        assertTrue(error.getMessage().contains(fragment), error.getMessage());
        assertTrue(error.getMessage().startsWith("bad.json: "), error.getMessage());
    }

    @Test
    void sha256MismatchIsRefused(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("model.tflite");
        Files.write(model, "not the exported model".getBytes(StandardCharsets.UTF_8));
        ModelManifest m = ModelManifest.parse(manifest("NCHW", "[1, 3, 112, 112]", SHA, "0.3"), "m");
        ModelIntegrityException error = assertThrows(ModelIntegrityException.class, () -> m.verifyModelFile(model));
        assertTrue(error.getMessage().contains(SHA), error.getMessage());
        assertTrue(error.getMessage().contains("same export folder"), error.getMessage());
    }

    @Test
    void matchingSha256IsAccepted(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("model.tflite");
        byte[] content = "the exported model".getBytes(StandardCharsets.UTF_8);
        Files.write(model, content);
        String sha = Sha256.of(content);
        ModelManifest m = ModelManifest.parse(manifest("NCHW", "[1, 3, 112, 112]", sha.toUpperCase(), "0.3"), "m");
        m.verifyModelFile(model);
        assertEquals(sha, Sha256.of(model));
    }

    @Test
    void sha256OfKnownInput() {
        assertEquals("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Sha256.of(new byte[0]));
        assertEquals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                Sha256.of("abc".getBytes(StandardCharsets.US_ASCII)));
    }

    @Test
    void readsFromStream() throws Exception {
        byte[] text = manifest("NCHW", "[1, 3, 112, 112]", SHA, "0.3").getBytes(StandardCharsets.UTF_8);
        ModelManifest m = ModelManifest.read(new java.io.ByteArrayInputStream(text), "asset");
        assertEquals(0.3, m.threshold());
    }
}
