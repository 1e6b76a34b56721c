package org.facekd.core;

import java.util.Arrays;

/**
 * How an aligned face becomes a model input: the Java twin of Python's
 * {@code training.preprocess.PreprocessSpec}, read from a manifest's {@code "preprocess"} object.
 *
 * <p>Steps, in order: resize to {@code size}×{@code size} (bilinear, half-pixel centres, as
 * OpenCV's {@code INTER_LINEAR}; skipped when already that size), reorder channels to
 * {@code channelOrder}, {@code (x - mean[c]) / std[c]} in float32, lay out as {@code layout}.
 */
public final class PreprocessSpec {
    /** The only resize the Python side defines. */
    public static final String RESIZE_BILINEAR_HALF_PIXEL = "bilinear_half_pixel";

    private final int size;
    private final ChannelOrder channelOrder;
    private final float[] mean;
    private final float[] std;
    private final TensorLayout layout;

    public PreprocessSpec(int size, ChannelOrder channelOrder, float[] mean, float[] std, TensorLayout layout) {
        if (size <= 0) {
            throw new ContractException("preprocess size must be positive, got " + size);
        }
        if (mean.length != 3 || std.length != 3) {
            throw new ContractException("preprocess mean and std need three values each");
        }
        for (float s : std) {
            if (s == 0f) {
                throw new ContractException("preprocess std must be non-zero, got " + Arrays.toString(std));
            }
        }
        this.size = size;
        this.channelOrder = channelOrder;
        this.mean = mean.clone();
        this.std = std.clone();
        this.layout = layout;
    }

    /** Reads the {@code "preprocess"} object of a manifest or golden file. */
    public static PreprocessSpec fromJson(Json.Obj json) {
        String dtype = json.optString("dtype", "float32");
        if (!"float32".equals(dtype)) {
            throw new ContractException("preprocess dtype \"" + dtype + "\" is not supported: the demo feeds float32");
        }
        String resize = json.optString("resize", RESIZE_BILINEAR_HALF_PIXEL);
        if (!RESIZE_BILINEAR_HALF_PIXEL.equals(resize)) {
            throw new ContractException("preprocess resize \"" + resize + "\" is not supported (only "
                    + RESIZE_BILINEAR_HALF_PIXEL + ")");
        }
        return new PreprocessSpec(
                json.integer("size"),
                ChannelOrder.parse(json.string("channel_order"), "preprocess.channel_order"),
                json.floats("mean"),
                json.floats("std"),
                TensorLayout.parse(json.optString("layout", "NCHW"), "preprocess.layout"));
    }

    public int size() {
        return size;
    }

    public ChannelOrder channelOrder() {
        return channelOrder;
    }

    public float[] mean() {
        return mean.clone();
    }

    public float[] std() {
        return std.clone();
    }

    /** The layout the training side used; an artifact's own input layout may differ. */
    public TensorLayout layout() {
        return layout;
    }

    @Override
    public String toString() {
        return "PreprocessSpec{size=" + size + ", " + channelOrder + ", mean=" + Arrays.toString(mean)
                + ", std=" + Arrays.toString(std) + ", " + layout + "}";
    }
}
