package org.facekd.core;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Collections;
import java.util.Locale;
import java.util.Map;

/**
 * An exported artifact's {@code manifest.json}: what the model file is, how to feed it and the
 * verification threshold it was validated with.
 *
 * <p>{@code threshold} is the best-accuracy threshold of balanced validation pairs; the optional
 * {@code operating_points} (absent or null in exports made before them) hold thresholds calibrated
 * at false accept rates, which {@link MatchPolicy} chooses from.
 *
 * <p>{@code input.layout} is the artifact's real input layout and wins over
 * {@code preprocess.layout} (the training-side layout, NCHW for a PyTorch student).
 */
public final class ModelManifest {
    private final String format;
    private final String precision;
    private final String file;
    private final String sha256;
    private final String inputName;
    private final int[] inputShape;
    private final TensorLayout inputLayout;
    private final String outputName;
    private final int[] outputShape;
    private final PreprocessSpec preprocess;
    private final int embeddingSize;
    private final Double threshold;
    private final String status;
    private final String reason;
    private final Map<String, Object> parity;
    private final OperatingPoints operatingPoints;

    private ModelManifest(Json.Obj json) {
        format = json.string("format");
        precision = json.string("precision");
        file = json.string("file");
        sha256 = json.string("sha256").toLowerCase(Locale.ROOT);
        if (!sha256.matches("[0-9a-f]{64}")) {
            throw new ContractException("manifest: 'sha256' must be 64 hex digits, got \"" + sha256 + "\"");
        }
        Json.Obj input = json.object("input");
        inputName = input.optString("name", "");
        inputShape = input.ints("shape");
        inputLayout = TensorLayout.parse(input.string("layout"), "manifest: 'input.layout'");
        String inputDtype = input.optString("dtype", "float32");
        if (!"float32".equals(inputDtype)) {
            throw new ContractException("manifest: input dtype \"" + inputDtype
                    + "\" is not supported: the demo feeds float32 (export with float I/O)");
        }
        Json.Obj output = json.object("output");
        String outputDtype = output.optString("dtype", "float32");
        if (!"float32".equals(outputDtype)) {
            throw new ContractException("manifest: output dtype \"" + outputDtype
                    + "\" is not supported: the demo reads float32 embeddings (a full-integer int8 artifact's"
                    + " output is int8 with output.quantization; use a float-output artifact such as tflite-fp32)");
        }
        outputName = output.optString("name", "");
        outputShape = output.ints("shape");
        preprocess = PreprocessSpec.fromJson(json.object("preprocess"));
        embeddingSize = json.integer("embedding_size");
        threshold = json.has("threshold") ? json.number("threshold") : null;
        status = json.optString("status", "unknown");
        reason = json.optString("reason", "");
        parity = json.has("parity") ? json.object("parity").asMap() : Collections.emptyMap();
        operatingPoints = json.has("operating_points") ? OperatingPoints.fromJson(json.object("operating_points")) : null;
        checkShapes();
    }

    private void checkShapes() {
        int size = preprocess.size();
        int[] expected = inputLayout == TensorLayout.NCHW
                ? new int[] {1, 3, size, size}
                : new int[] {1, size, size, 3};
        boolean matches = inputShape.length == 4;
        for (int i = 0; matches && i < 4; i++) {
            matches = inputShape[i] == expected[i] || (i == 0 && inputShape[i] == -1);
        }
        if (!matches) {
            throw new ContractException("manifest: input shape " + Arrays.toString(inputShape) + " does not fit "
                    + inputLayout + " at preprocess size " + size + " (expected " + Arrays.toString(expected) + ")");
        }
        int outputLength = outputShape.length == 0 ? -1 : outputShape[outputShape.length - 1];
        if (embeddingSize <= 0 || (outputLength > 0 && outputLength != embeddingSize)) {
            throw new ContractException("manifest: output shape " + Arrays.toString(outputShape)
                    + " does not match embedding_size " + embeddingSize);
        }
    }

    /** Parses manifest text; {@code source} names it in errors. */
    public static ModelManifest parse(String text, String source) {
        try {
            return new ModelManifest(Json.Obj.of(Json.parse(text), "manifest"));
        } catch (ContractException e) {
            throw new ContractException(source + ": " + e.getMessage());
        }
    }

    public static ModelManifest read(Path manifestFile) throws IOException {
        return parse(new String(Files.readAllBytes(manifestFile), StandardCharsets.UTF_8), manifestFile.toString());
    }

    /** Reads a manifest from a stream (e.g. an Android asset); the caller closes it. */
    public static ModelManifest read(InputStream in, String source) throws IOException {
        // InputStream.readAllBytes needs Android API 33; copy by hand to keep API 26.
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        byte[] buffer = new byte[8192];
        int read;
        while ((read = in.read(buffer)) != -1) {
            bytes.write(buffer, 0, read);
        }
        return parse(new String(bytes.toByteArray(), StandardCharsets.UTF_8), source);
    }

    /**
     * Refuses a model whose sha256 differs from the manifest's.
     *
     * @throws ModelIntegrityException naming both digests and what to do
     */
    public void verifySha256(String actualSha256, String modelSource) {
        if (!sha256.equalsIgnoreCase(actualSha256)) {
            throw new ModelIntegrityException(modelSource + " has sha256 " + actualSha256
                    + " but its manifest expects " + sha256
                    + ": copy model file and manifest.json from the same export folder");
        }
    }

    /** Hashes {@code modelFile} and refuses it if it is not the manifest's model. */
    public void verifyModelFile(Path modelFile) throws IOException {
        verifySha256(Sha256.of(modelFile), modelFile.toString());
    }

    public String format() {
        return format;
    }

    public String precision() {
        return precision;
    }

    /** File name of the model, relative to the manifest's folder. */
    public String file() {
        return file;
    }

    public String sha256() {
        return sha256;
    }

    public String inputName() {
        return inputName;
    }

    public int[] inputShape() {
        return inputShape.clone();
    }

    public TensorLayout inputLayout() {
        return inputLayout;
    }

    public String outputName() {
        return outputName;
    }

    public int[] outputShape() {
        return outputShape.clone();
    }

    public PreprocessSpec preprocess() {
        return preprocess;
    }

    public int embeddingSize() {
        return embeddingSize;
    }

    public boolean hasThreshold() {
        return threshold != null;
    }

    /** Cosine threshold chosen on validation pairs: {@code cosine >= threshold} means same person. */
    public double threshold() {
        if (threshold == null) {
            throw new ContractException("manifest has no threshold: export from a checkpoint validated on pairs");
        }
        return threshold;
    }

    /** True if the manifest carries {@code operating_points} (exports made before them do not). */
    public boolean hasOperatingPoints() {
        return operatingPoints != null;
    }

    /**
     * Thresholds calibrated at false accept rates.
     *
     * @throws ContractException if the manifest has none (see {@link #hasOperatingPoints()})
     */
    public OperatingPoints operatingPoints() {
        if (operatingPoints == null) {
            throw new ContractException("manifest has no operating points (exported before they existed): "
                    + "re-export with facekd export");
        }
        return operatingPoints;
    }

    /** Export status ({@code "ok"} when conversion and the parity gate passed). */
    public String status() {
        return status;
    }

    public String reason() {
        return reason;
    }

    public boolean isOk() {
        return "ok".equals(status);
    }

    /** Parity figures as exported (e.g. {@code mean_cos}, {@code worst_cos}, {@code flip_rate}). */
    public Map<String, Object> parity() {
        return parity;
    }

    /** The preprocessor that feeds this artifact (its own input layout). */
    public ImagePreprocessor preprocessor() {
        return new ImagePreprocessor(preprocess, inputLayout);
    }
}
