package org.facekd.core;

/**
 * The pipeline from a face crop to a decision: preprocess → model → L2 normalise → match,
 * timing each stage into a {@link LatencyRecorder} ("preprocess", "inference", "match").
 */
public final class FaceRecognizer {
    public static final String STAGE_PREPROCESS = "preprocess";
    public static final String STAGE_INFERENCE = "inference";
    public static final String STAGE_MATCH = "match";

    private final ImagePreprocessor preprocessor;
    private final EmbeddingEngine engine;
    private final int embeddingSize;
    private final LatencyRecorder latency;

    public FaceRecognizer(ModelManifest manifest, EmbeddingEngine engine, LatencyRecorder latency) {
        this.preprocessor = manifest.preprocessor();
        this.engine = engine;
        this.embeddingSize = manifest.embeddingSize();
        this.latency = latency;
    }

    /** L2-normalised embedding of a face crop (ARGB; resized to the model size if needed). */
    public float[] embed(int[] argb, int width, int height) {
        long start = System.nanoTime();
        float[] input = preprocessor.toTensor(argb, width, height);
        latency.recordSince(STAGE_PREPROCESS, start);
        start = System.nanoTime();
        float[] raw = engine.embed(input);
        latency.recordSince(STAGE_INFERENCE, start);
        if (raw.length != embeddingSize) {
            throw new ContractException("model returned " + raw.length + " values, manifest embedding_size is "
                    + embeddingSize);
        }
        return Embeddings.l2Normalize(raw);
    }

    /** Embeds a crop and matches it against the matcher's gallery. */
    public Recognition identify(int[] argb, int width, int height, FaceMatcher matcher) {
        float[] embedding = embed(argb, width, height);
        long start = System.nanoTime();
        FaceMatcher.Match match = matcher.match(embedding);
        latency.recordSince(STAGE_MATCH, start);
        return new Recognition(embedding, match);
    }

    /** A face's normalised embedding (kept for enrolment) and its match. */
    public static final class Recognition {
        private final float[] embedding;
        private final FaceMatcher.Match match;

        Recognition(float[] embedding, FaceMatcher.Match match) {
            this.embedding = embedding;
            this.match = match;
        }

        public float[] embedding() {
            return embedding.clone();
        }

        public FaceMatcher.Match match() {
            return match;
        }
    }
}
