package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/** References made with opencv-python 4.14: {@code cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)}. */
class BilinearResizeTest {
    private static byte[] bytes(int... values) {
        byte[] out = new byte[values.length];
        for (int i = 0; i < values.length; i++) {
            out[i] = (byte) values[i];
        }
        return out;
    }

    @Test
    void downscaleMatchesOpenCv() {
        byte[] src = bytes(139, 74, 229, 241, 169, 65, 6, 160, 149, 106, 38, 175, 188, 205, 175, 229, 98, 249, 10,
                148, 95, 86, 147, 198, 66, 39, 106, 213, 171, 45, 167, 57, 69, 81, 55, 14, 153, 178, 215, 76, 52, 39,
                250, 72, 215, 50, 161, 223, 112, 172, 161, 233, 38, 17, 89, 1, 221, 6, 242, 127);
        byte[] expected = bytes(170, 107, 178, 19, 158, 157, 161, 145, 157, 147, 85, 124, 120, 163, 207, 178, 96,
                111, 82, 146, 177, 219, 61, 50, 60, 145, 158);
        assertArrayEquals(expected, BilinearResize.resizeRgb(src, 5, 4, 3, 3));
    }

    @Test
    void upscaleMatchesOpenCvIncludingBorders() {
        byte[] src = bytes(143, 6, 60, 210, 94, 25, 166, 33, 249, 189, 12, 204, 33, 57, 124, 30, 199, 149, 202, 119,
                72, 220, 3, 209, 122, 136, 147);
        byte[] expected = bytes(143, 6, 60, 153, 18, 55, 181, 56, 40, 210, 94, 25, 191, 68, 121, 172, 42, 217, 166,
                33, 249, 161, 8, 118, 158, 18, 110, 149, 49, 87, 139, 79, 65, 127, 88, 126, 115, 96, 188, 111, 99,
                209, 189, 12, 204, 167, 18, 193, 100, 38, 158, 33, 57, 124, 32, 118, 135, 30, 179, 145, 30, 199, 149,
                197, 76, 125, 189, 69, 132, 167, 47, 153, 145, 25, 175, 119, 83, 163, 94, 141, 152, 85, 161, 148,
                202, 119, 72, 204, 102, 92, 212, 53, 150, 220, 3, 209, 178, 60, 182, 136, 117, 156, 122, 136, 147);
        assertArrayEquals(expected, BilinearResize.resizeRgb(src, 3, 3, 7, 5));
    }

    @Test
    void sameSizeIsIdentity() {
        byte[] src = bytes(1, 2, 3, 250, 251, 252, 7, 8, 9, 100, 101, 102);
        assertArrayEquals(src, BilinearResize.resizeRgb(src, 2, 2, 2, 2));
    }

    @Test
    void refusesWrongBufferSize() {
        assertThrows(IllegalArgumentException.class, () -> BilinearResize.resizeRgb(new byte[11], 2, 2, 3, 3));
        assertThrows(IllegalArgumentException.class, () -> BilinearResize.resizeRgb(new byte[12], 2, 2, 0, 3));
    }
}
