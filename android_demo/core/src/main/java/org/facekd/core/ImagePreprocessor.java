package org.facekd.core;

/**
 * Packed ARGB pixels (Android {@code Bitmap.getPixels}, Java {@code BufferedImage.getRGB}) to
 * the model's float32 input tensor, exactly as {@code PreprocessSpec.apply} does in Python.
 *
 * <p>Per output value: {@code (float(pixel[c_src]) - mean[c]) / std[c]} in float32, where
 * {@code c_src = c} for RGB and {@code 2 - c} for BGR. Float32 subtraction and division give the
 * same bits as NumPy, so for images already at the model size the tensor matches Python exactly.
 * The alpha channel is ignored.
 */
public final class ImagePreprocessor {
    private final PreprocessSpec spec;
    private final TensorLayout outputLayout;

    /**
     * @param outputLayout the artifact's input layout ({@code manifest.input.layout}), which is
     *     authoritative: it may differ from {@code spec.layout()} (the training-side layout).
     */
    public ImagePreprocessor(PreprocessSpec spec, TensorLayout outputLayout) {
        this.spec = spec;
        this.outputLayout = outputLayout;
    }

    public TensorLayout outputLayout() {
        return outputLayout;
    }

    /** One image → one tensor of {@code 3 × size × size} floats in {@link #outputLayout()}. */
    public float[] toTensor(int[] argb, int width, int height) {
        if (width <= 0 || height <= 0 || argb.length < width * height) {
            throw new IllegalArgumentException("need " + width + "x" + height + " pixels, got " + argb.length);
        }
        int size = spec.size();
        byte[] rgb = toRgbBytes(argb, width, height);
        if (width != size || height != size) {
            rgb = BilinearResize.resizeRgb(rgb, width, height, size, size);
        }
        return normalise(rgb);
    }

    private float[] normalise(byte[] rgb) {
        int size = spec.size();
        int plane = size * size;
        float[] mean = spec.mean();
        float[] std = spec.std();
        boolean bgr = spec.channelOrder() == ChannelOrder.BGR;
        float[] tensor = new float[3 * plane];
        for (int pixel = 0; pixel < plane; pixel++) {
            for (int c = 0; c < 3; c++) {
                int source = bgr ? 2 - c : c;
                float value = ((float) (rgb[pixel * 3 + source] & 0xFF) - mean[c]) / std[c];
                int index = outputLayout == TensorLayout.NCHW ? c * plane + pixel : pixel * 3 + c;
                tensor[index] = value;
            }
        }
        return tensor;
    }

    /** Packed ARGB ints → interleaved RGB bytes. */
    public static byte[] toRgbBytes(int[] argb, int width, int height) {
        byte[] rgb = new byte[width * height * 3];
        for (int i = 0; i < width * height; i++) {
            int pixel = argb[i];
            rgb[i * 3] = (byte) (pixel >> 16);
            rgb[i * 3 + 1] = (byte) (pixel >> 8);
            rgb[i * 3 + 2] = (byte) pixel;
        }
        return rgb;
    }
}
