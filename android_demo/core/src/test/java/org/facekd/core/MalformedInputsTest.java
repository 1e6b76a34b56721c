package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Random;
import java.util.zip.CRC32;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A seeded mutator over valid manifests and gallery files: every mutant either still parses or is
 * refused with {@link ContractException} / {@link GalleryFileException}; never another exception,
 * never a hang.
 */
class MalformedInputsTest {
    private static final long SEED = 20261202L;
    private static final int MUTANTS = 3000;
    private static final String MODEL = "0123456789abcdef".repeat(4);
    private static final byte[] JSON_TOKENS = "{}[]\":,-+.eE0123456789 \\ntruefalsenull\u00e9".getBytes(StandardCharsets.UTF_8);

    /** One random edit: flip, delete, insert, duplicate, truncate or overwrite with a JSON-ish token. */
    static byte[] mutate(byte[] valid, Random random) {
        byte[] bytes = valid.clone();
        int edits = 1 + random.nextInt(3);
        for (int e = 0; e < edits && bytes.length > 0; e++) {
            int at = random.nextInt(bytes.length);
            int span = 1 + random.nextInt(Math.min(16, bytes.length - at));
            switch (random.nextInt(6)) {
                case 0:
                    bytes[at] ^= (byte) (1 << random.nextInt(8));
                    break;
                case 1:
                    bytes = concat(Arrays.copyOf(bytes, at), Arrays.copyOfRange(bytes, at + span, bytes.length));
                    break;
                case 2:
                    byte[] noise = new byte[span];
                    random.nextBytes(noise);
                    bytes = concat(concat(Arrays.copyOf(bytes, at), noise), Arrays.copyOfRange(bytes, at, bytes.length));
                    break;
                case 3:
                    bytes = concat(concat(Arrays.copyOf(bytes, at + span), Arrays.copyOfRange(bytes, at, at + span)),
                            Arrays.copyOfRange(bytes, at + span, bytes.length));
                    break;
                case 4:
                    bytes = Arrays.copyOf(bytes, at);
                    break;
                default:
                    bytes[at] = JSON_TOKENS[random.nextInt(JSON_TOKENS.length)];
                    break;
            }
        }
        return bytes;
    }

    private static byte[] concat(byte[] a, byte[] b) {
        byte[] out = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }

    @Test
    void mutatedManifestsParseOrRaiseContractException() {
        byte[] valid = ModelManifestTest.manifest("NHWC", "[1, 112, 112, 3]", "ab".repeat(32), "0.3125")
                .getBytes(StandardCharsets.UTF_8);
        ModelManifest.parse(new String(valid, StandardCharsets.UTF_8), "valid");
        Random random = new Random(SEED);
        int[] refused = {0};
        assertTimeoutPreemptively(Duration.ofSeconds(60), () -> {
            for (int i = 0; i < MUTANTS; i++) {
                byte[] mutant = mutate(valid, random);
                try {
                    ModelManifest.parse(new String(mutant, StandardCharsets.UTF_8), "mutant " + i);
                } catch (ContractException expected) {
                    refused[0]++;
                } catch (RuntimeException | StackOverflowError other) {
                    fail("mutant " + i + " raised " + other + ": " + new String(mutant, StandardCharsets.UTF_8));
                }
            }
        });
        assertTrue(refused[0] > MUTANTS / 2, "most mutants must be refused, got " + refused[0]);
    }

    @Test
    void deeplyNestedManifestIsRefusedNotAStackOverflow() {
        String nested = "[".repeat(100_000) + "]".repeat(100_000);
        try {
            ModelManifest.parse(nested, "nested");
            fail("a nested array is not a manifest");
        } catch (ContractException expected) {
            assertTrue(expected.getMessage().startsWith("nested"));
        }
    }

    @Test
    void mutatedGalleryFilesLoadOrRaiseGalleryFileException(@TempDir Path dir) throws IOException {
        Gallery gallery = new Gallery(MODEL, 4);
        gallery.enrol("Zoë", new float[] {1f, 2f, 3f, 4f});
        gallery.enrol("Ada", new float[] {0f, 1f, 0f, 0f});
        gallery.enrol("Zoë", new float[] {-1f, 0.5f, 0.25f, 0f});
        byte[] valid = GalleryStore.encode(gallery);
        Path file = dir.resolve("gallery.bin");
        GalleryStore store = new GalleryStore(file);
        Random random = new Random(SEED + 1);
        int[] refused = {0};
        assertTimeoutPreemptively(Duration.ofSeconds(60), () -> {
            for (int i = 0; i < MUTANTS; i++) {
                byte[] mutant = mutate(valid, random);
                if (random.nextBoolean() && mutant.length > 8) {  // re-seal the checksum to reach the decoder
                    CRC32 crc = new CRC32();
                    crc.update(mutant, 0, mutant.length - 8);
                    ByteBuffer.wrap(mutant, mutant.length - 8, 8).putLong(crc.getValue());
                }
                Files.write(file, mutant);
                try {
                    store.load(MODEL, 4);
                } catch (GalleryFileException expected) {
                    refused[0]++;
                } catch (RuntimeException | IOException other) {
                    fail("mutant " + i + " raised " + other);
                }
            }
        });
        assertTrue(refused[0] > MUTANTS / 2, "most mutants must be refused, got " + refused[0]);
    }
}
