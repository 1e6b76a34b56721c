package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class ImagePreprocessorTest {
    private static final float[] HALF = {127.5f, 127.5f, 127.5f};

    private static int argb(int r, int g, int b) {
        return 0xFF000000 | (r << 16) | (g << 8) | b;
    }

    /** A 2×2 image: red, green / blue, white. */
    private static final int[] PIXELS = {argb(255, 0, 0), argb(0, 255, 0), argb(0, 0, 255), argb(255, 255, 255)};

    @Test
    void normalisesPerChannelInNchw() {
        PreprocessSpec spec = new PreprocessSpec(2, ChannelOrder.RGB, new float[] {0f, 10f, 20f},
                new float[] {1f, 2f, 5f}, TensorLayout.NCHW);
        float[] tensor = new ImagePreprocessor(spec, TensorLayout.NCHW).toTensor(PIXELS, 2, 2);
        assertArrayEquals(new float[] {
            255f, 0f, 0f, 255f,                  // R plane: (r - 0) / 1
            -5f, 122.5f, -5f, 122.5f,            // G plane: (g - 10) / 2
            -4f, -4f, 47f, 47f,                  // B plane: (b - 20) / 5
        }, tensor);
    }

    @Test
    void nhwcInterleavesAndBgrSwapsChannels() {
        PreprocessSpec spec = new PreprocessSpec(2, ChannelOrder.BGR, new float[] {0f, 0f, 0f},
                new float[] {1f, 1f, 1f}, TensorLayout.NCHW);
        float[] tensor = new ImagePreprocessor(spec, TensorLayout.NHWC).toTensor(PIXELS, 2, 2);
        assertArrayEquals(new float[] {0f, 0f, 255f, 0f, 255f, 0f, 255f, 0f, 0f, 255f, 255f, 255f}, tensor);
    }

    @Test
    void matchesNumpyFloat32Arithmetic() {
        // (x - 127.5) / 127.5 in float32, as PreprocessSpec.apply computes it in NumPy.
        PreprocessSpec spec = new PreprocessSpec(1, ChannelOrder.RGB, HALF, HALF, TensorLayout.NCHW);
        float[] tensor = new ImagePreprocessor(spec, TensorLayout.NCHW).toTensor(new int[] {argb(0, 128, 255)}, 1, 1);
        assertArrayEquals(new float[] {-1f, (128f - 127.5f) / 127.5f, 1f}, tensor);
        assertEquals(0.003921569f, tensor[1]);
    }

    @Test
    void resizesWhenSizeDiffers() {
        PreprocessSpec spec = new PreprocessSpec(3, ChannelOrder.RGB, new float[3], new float[] {1f, 1f, 1f},
                TensorLayout.NCHW);
        int[] grey = new int[5 * 4];
        java.util.Arrays.fill(grey, argb(77, 77, 77));
        float[] tensor = new ImagePreprocessor(spec, TensorLayout.NCHW).toTensor(grey, 5, 4);
        assertEquals(27, tensor.length);
        for (float v : tensor) {
            assertEquals(77f, v);
        }
    }

    @Test
    void refusesTooFewPixels() {
        PreprocessSpec spec = new PreprocessSpec(2, ChannelOrder.RGB, HALF, HALF, TensorLayout.NCHW);
        assertThrows(IllegalArgumentException.class,
                () -> new ImagePreprocessor(spec, TensorLayout.NCHW).toTensor(new int[3], 2, 2));
    }

    @Test
    void specRefusesUnsupportedOptions() {
        String base = "{\"size\": 112, \"channel_order\": \"RGB\", \"mean\": [0,0,0], \"std\": [1,1,1]";
        assertEquals(112, PreprocessSpec.fromJson(Json.Obj.of(Json.parse(base + "}"), "p")).size());
        assertThrows(ContractException.class,
                () -> PreprocessSpec.fromJson(Json.Obj.of(Json.parse(base + ", \"dtype\": \"uint8\"}"), "p")));
        assertThrows(ContractException.class,
                () -> PreprocessSpec.fromJson(Json.Obj.of(Json.parse(base + ", \"resize\": \"area\"}"), "p")));
        assertThrows(ContractException.class, () -> PreprocessSpec.fromJson(Json.Obj.of(
                Json.parse("{\"size\": 112, \"channel_order\": \"RGBA\", \"mean\": [0,0,0], \"std\": [1,1,1]}"), "p")));
        assertThrows(ContractException.class,
                () -> new PreprocessSpec(112, ChannelOrder.RGB, HALF, new float[] {1f, 0f, 1f}, TensorLayout.NCHW));
    }
}
