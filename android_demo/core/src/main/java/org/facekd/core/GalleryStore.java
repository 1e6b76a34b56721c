package org.facekd.core;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.UTFDataFormatException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.text.SimpleDateFormat;
import java.util.Arrays;
import java.util.Date;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TimeZone;
import java.util.zip.CRC32;

/**
 * Persists a {@link Gallery} to one versioned binary file, replaced atomically on every save.
 *
 * <p>Format version 1, big-endian: magic {@code "FKDGALRY"}, int version, UTF model sha256,
 * int dimension, int people; per person: UTF name, int templates, templates × dimension float32;
 * then a long CRC-32 of every preceding byte. A save writes a temporary file in the same folder,
 * forces it to disk and renames it over the old one ({@code ATOMIC_MOVE}), so a crash leaves
 * either the old or the new gallery, never a mix. A file that fails to load is never modified.
 */
public final class GalleryStore {
    public static final int FORMAT_VERSION = 1;
    private static final byte[] MAGIC = "FKDGALRY".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    private static final int HEADER_BYTES = MAGIC.length + 4;
    private static final int CRC_BYTES = 8;

    private final Path file;

    public GalleryStore(Path file) {
        this.file = file;
    }

    /**
     * Loads the gallery for this model, or an empty one if the file does not exist yet.
     *
     * @throws GalleryFileException if the file is corrupt, newer, or belongs to another model
     */
    public Gallery load(String modelSha256, int dimension) throws IOException {
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (NoSuchFileException e) {
            return new Gallery(modelSha256, dimension);
        }
        Gallery gallery = decode(bytes);
        if (!gallery.modelSha256().equals(modelSha256) || gallery.dimension() != dimension) {
            throw new GalleryFileException(GalleryFileException.Reason.OTHER_MODEL, file,
                    "was enrolled with model " + shortSha(gallery.modelSha256()) + " (" + gallery.dimension()
                            + "-d), the current model is " + shortSha(modelSha256) + " (" + dimension
                            + "-d): its faces must be enrolled again");
        }
        return gallery;
    }

    /** Writes the gallery atomically (temp file + fsync + atomic rename). */
    public void save(Gallery gallery) throws IOException {
        byte[] bytes = encode(gallery);
        Path folder = file.toAbsolutePath().getParent();
        Files.createDirectories(folder);
        Path temp = Files.createTempFile(folder, "." + file.getFileName() + ".", ".tmp");
        try {
            try (FileChannel channel = FileChannel.open(temp, StandardOpenOption.WRITE,
                    StandardOpenOption.TRUNCATE_EXISTING)) {
                ByteBuffer buffer = ByteBuffer.wrap(bytes);
                while (buffer.hasRemaining()) {
                    channel.write(buffer);
                }
                channel.force(true);
            }
            Files.move(temp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(temp);
        }
    }

    /**
     * Renames an unusable gallery file to {@code <name>.<UTC time>.bak} beside it, so that a new
     * gallery can start without losing the old one. Returns the new path.
     */
    public Path moveAside() throws IOException {
        SimpleDateFormat format = new SimpleDateFormat("yyyyMMdd-HHmmss", Locale.ROOT);
        format.setTimeZone(TimeZone.getTimeZone("UTC"));
        String stamp = format.format(new Date());
        Path target = file.resolveSibling(file.getFileName() + "." + stamp + ".bak");
        for (int i = 1; Files.exists(target); i++) {
            target = file.resolveSibling(file.getFileName() + "." + stamp + "-" + i + ".bak");
        }
        return Files.move(file, target, StandardCopyOption.ATOMIC_MOVE);
    }

    static byte[] encode(Gallery gallery) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            out.write(MAGIC);
            out.writeInt(FORMAT_VERSION);
            out.writeUTF(gallery.modelSha256());
            out.writeInt(gallery.dimension());
            Map<String, List<float[]>> people = gallery.snapshot();
            out.writeInt(people.size());
            for (Map.Entry<String, List<float[]>> person : people.entrySet()) {
                out.writeUTF(person.getKey());
                out.writeInt(person.getValue().size());
                for (float[] template : person.getValue()) {
                    for (float value : template) {
                        out.writeFloat(value);
                    }
                }
            }
            CRC32 crc = new CRC32();
            crc.update(bytes.toByteArray());
            out.writeLong(crc.getValue());
        } catch (IOException e) {
            throw new IllegalStateException("writing to memory cannot fail", e);
        }
        return bytes.toByteArray();
    }

    private Gallery decode(byte[] bytes) throws GalleryFileException {
        if (bytes.length < HEADER_BYTES + CRC_BYTES
                || !Arrays.equals(Arrays.copyOf(bytes, MAGIC.length), MAGIC)) {
            throw corrupt("is not a facekd gallery file");
        }
        int version = ByteBuffer.wrap(bytes, MAGIC.length, 4).getInt();
        if (version > FORMAT_VERSION) {
            throw new GalleryFileException(GalleryFileException.Reason.NEWER_FORMAT, file,
                    "has format version " + version + " but this app reads up to " + FORMAT_VERSION
                            + ": update the app");
        }
        if (version < 1) {
            throw corrupt("has an invalid format version " + version);
        }
        int payload = bytes.length - CRC_BYTES;
        CRC32 crc = new CRC32();
        crc.update(bytes, 0, payload);
        if (crc.getValue() != ByteBuffer.wrap(bytes, payload, CRC_BYTES).getLong()) {
            throw corrupt("fails its checksum (damaged or truncated)");
        }
        try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes, HEADER_BYTES,
                payload - HEADER_BYTES))) {
            String modelSha256 = in.readUTF();
            int dimension = in.readInt();
            int people = in.readInt();
            if (dimension <= 0 || people < 0) {
                throw corrupt("has an invalid header (dimension " + dimension + ", people " + people + ")");
            }
            Gallery gallery = new Gallery(modelSha256, dimension);
            for (int p = 0; p < people; p++) {
                String name = in.readUTF();
                int templates = in.readInt();
                // divide, never multiply: templates × dimension × 4 overflows a long for hostile headers
                if (templates <= 0 || templates > in.available() / (4L * dimension)) {
                    throw corrupt("has an invalid template count " + templates + " for \"" + name + "\"");
                }
                for (int t = 0; t < templates; t++) {
                    float[] template = new float[dimension];
                    for (int i = 0; i < dimension; i++) {
                        template[i] = in.readFloat();
                    }
                    gallery.restore(name, template);
                }
            }
            if (in.available() != 0) {
                throw corrupt("has " + in.available() + " unexpected trailing bytes");
            }
            return gallery;
        } catch (EOFException | UTFDataFormatException e) {
            throw corrupt("ends early or holds a bad name (" + e.getClass().getSimpleName() + ")");
        } catch (GalleryFileException e) {
            throw e;
        } catch (IOException e) {
            throw new IllegalStateException("reading from memory cannot fail", e);
        }
    }

    private GalleryFileException corrupt(String detail) {
        return new GalleryFileException(GalleryFileException.Reason.CORRUPT, file, detail);
    }

    private static String shortSha(String sha256) {
        return sha256.length() > 12 ? sha256.substring(0, 12) : sha256;
    }
}
