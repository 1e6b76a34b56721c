package org.facekd.core.golden;

import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import javax.imageio.ImageIO;

/** Reads golden files the way the app receives pixels: packed ARGB ints. */
public final class TestImages {
    private TestImages() {
    }

    /** A decoded image: packed ARGB pixels, row-major. */
    public static final class Argb {
        public final int[] pixels;
        public final int width;
        public final int height;

        Argb(int[] pixels, int width, int height) {
            this.pixels = pixels;
            this.width = width;
            this.height = height;
        }
    }

    public static Argb readPng(Path file) throws IOException {
        BufferedImage image = ImageIO.read(file.toFile());
        if (image == null) {
            throw new IOException(file + " is not an image ImageIO can read");
        }
        int width = image.getWidth();
        int height = image.getHeight();
        return new Argb(image.getRGB(0, 0, width, height, null, 0, width), width, height);
    }

    /** Raw little-endian float32 values. */
    public static float[] readFloat32(Path file) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        if (bytes.length % 4 != 0) {
            throw new IOException(file + " is not raw float32 (" + bytes.length + " bytes)");
        }
        float[] values = new float[bytes.length / 4];
        ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(values);
        return values;
    }
}
