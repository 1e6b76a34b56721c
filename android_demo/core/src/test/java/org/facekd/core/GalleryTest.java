package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class GalleryTest {
    private static final String MODEL = "0123456789abcdef".repeat(4);

    private static Gallery sample() {
        Gallery gallery = new Gallery(MODEL, 4);
        gallery.enrol("Zoë", new float[] {1f, 2f, 3f, 4f});
        gallery.enrol("Ada", new float[] {0f, 1f, 0f, 0f});
        gallery.enrol("Zoë", new float[] {-1f, 0.5f, 0.25f, 0f});
        return gallery;
    }

    @Test
    void enrolsSeveralNormalisedTemplatesPerPerson() {
        Gallery gallery = sample();
        assertEquals(Arrays.asList("Zoë", "Ada"), gallery.names());
        assertEquals(2, gallery.templateCount("Zoë"));
        float[] first = gallery.snapshot().get("Zoë").get(0);
        assertEquals(1.0, Embeddings.dot(first, first), 1e-6);
        gallery.enrol("  Ada ", new float[] {0f, 0f, 1f, 0f});
        assertEquals(2, gallery.templateCount("Ada"), "names are trimmed");
    }

    @Test
    void deletesPeopleAndTemplates() {
        Gallery gallery = sample();
        assertTrue(gallery.deleteTemplate("Zoë", 0));
        assertEquals(1, gallery.templateCount("Zoë"));
        assertFalse(gallery.deleteTemplate("Zoë", 5));
        assertTrue(gallery.deleteTemplate("Zoë", 0));
        assertFalse(gallery.names().contains("Zoë"), "a person goes with their last template");
        assertTrue(gallery.delete("Ada"));
        assertFalse(gallery.delete("Ada"));
        assertEquals(0, gallery.size());
    }

    @Test
    void refusesBadNamesAndDimensions() {
        Gallery gallery = new Gallery(MODEL, 4);
        assertThrows(IllegalArgumentException.class, () -> gallery.enrol("  ", new float[4]));
        assertThrows(IllegalArgumentException.class, () -> gallery.enrol("a\nb", new float[] {1, 0, 0, 0}));
        assertThrows(IllegalArgumentException.class, () -> gallery.enrol("Ada", new float[3]));
        assertThrows(IllegalArgumentException.class, () -> gallery.enrol("Ada", new float[4]));
    }

    @Test
    void snapshotIsACopy() {
        Gallery gallery = sample();
        Map<String, List<float[]>> snapshot = gallery.snapshot();
        snapshot.get("Ada").get(0)[0] = 42f;
        assertEquals(0f, gallery.snapshot().get("Ada").get(0)[0]);
    }

    @Test
    void saveAndLoadRoundTripsExactly(@TempDir Path dir) throws IOException {
        GalleryStore store = new GalleryStore(dir.resolve("sub/gallery.bin"));
        Gallery original = sample();
        store.save(original);
        Gallery loaded = store.load(MODEL, 4);
        assertEquals(original.names(), loaded.names());
        for (String name : original.names()) {
            List<float[]> expected = original.snapshot().get(name);
            List<float[]> actual = loaded.snapshot().get(name);
            assertEquals(expected.size(), actual.size());
            for (int i = 0; i < expected.size(); i++) {
                assertArrayEquals(expected.get(i), actual.get(i));
            }
        }
    }

    @Test
    void missingFileGivesEmptyGallery(@TempDir Path dir) throws IOException {
        Gallery gallery = new GalleryStore(dir.resolve("none.bin")).load(MODEL, 4);
        assertEquals(0, gallery.size());
        assertEquals(MODEL, gallery.modelSha256());
    }

    @Test
    void saveReplacesAtomicallyAndLeavesNoTempFiles(@TempDir Path dir) throws IOException {
        GalleryStore store = new GalleryStore(dir.resolve("gallery.bin"));
        Gallery gallery = sample();
        store.save(gallery);
        gallery.delete("Ada");
        store.save(gallery);
        assertEquals(Arrays.asList("Zoë"), store.load(MODEL, 4).names());
        assertEquals(Arrays.asList("gallery.bin"), listNames(dir));
    }

    @Test
    void failedSaveLeavesTargetAndNoTempFile(@TempDir Path dir) throws IOException {
        Path target = dir.resolve("gallery.bin");
        Path child = Files.createDirectories(target.resolve("child"));
        GalleryStore store = new GalleryStore(target);
        assertThrows(IOException.class, () -> store.save(sample()), "a non-empty directory cannot be replaced");
        assertTrue(Files.isDirectory(child));
        try (Stream<Path> files = Files.list(dir)) {
            assertEquals(Arrays.asList("gallery.bin"),
                    files.map(p -> p.getFileName().toString()).collect(Collectors.toList()));
        }
    }

    @Test
    void corruptFileIsReportedAndLeftUntouched(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("gallery.bin");
        GalleryStore store = new GalleryStore(file);
        store.save(sample());
        byte[] good = Files.readAllBytes(file);

        byte[] flipped = good.clone();
        flipped[good.length / 2] ^= 0x10;
        assertCorrupt(store, file, flipped, "checksum");
        assertCorrupt(store, file, Arrays.copyOf(good, good.length - 3), "checksum");
        assertCorrupt(store, file, Arrays.copyOf(good, 10), "not a facekd gallery");
        assertCorrupt(store, file, "{\"people\": []}".getBytes(), "not a facekd gallery");
    }

    private static void assertCorrupt(GalleryStore store, Path file, byte[] content, String fragment)
            throws IOException {
        Files.write(file, content);
        GalleryFileException error = assertThrows(GalleryFileException.class, () -> store.load(MODEL, 4));
        assertEquals(GalleryFileException.Reason.CORRUPT, error.reason());
        assertTrue(error.getMessage().contains(fragment), error.getMessage());
        assertTrue(error.getMessage().contains(file.toString()), error.getMessage());
        assertTrue(error.getMessage().contains("left untouched"), error.getMessage());
        assertArrayEquals(content, Files.readAllBytes(file));
    }

    @Test
    void newerFormatIsRefused(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("gallery.bin");
        GalleryStore store = new GalleryStore(file);
        store.save(sample());
        byte[] bytes = Files.readAllBytes(file);
        ByteBuffer.wrap(bytes).putInt(8, GalleryStore.FORMAT_VERSION + 1);
        Files.write(file, bytes);
        GalleryFileException error = assertThrows(GalleryFileException.class, () -> store.load(MODEL, 4));
        assertEquals(GalleryFileException.Reason.NEWER_FORMAT, error.reason());
        assertTrue(error.getMessage().contains("update the app"), error.getMessage());
    }

    @Test
    void galleryOfAnotherModelIsRefused(@TempDir Path dir) throws IOException {
        GalleryStore store = new GalleryStore(dir.resolve("gallery.bin"));
        store.save(sample());
        GalleryFileException error = assertThrows(GalleryFileException.class, () -> store.load("f".repeat(64), 4));
        assertEquals(GalleryFileException.Reason.OTHER_MODEL, error.reason());
        assertTrue(error.getMessage().contains("enrolled again"), error.getMessage());
        assertEquals(GalleryFileException.Reason.OTHER_MODEL,
                assertThrows(GalleryFileException.class, () -> store.load(MODEL, 8)).reason());
    }

    @Test
    void moveAsideKeepsTheOldFileAndFreesThePath(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("gallery.bin");
        GalleryStore store = new GalleryStore(file);
        Files.write(file, "garbage".getBytes());
        Path first = store.moveAside();
        Files.write(file, "more garbage".getBytes());
        Path second = store.moveAside();
        assertFalse(Files.exists(file));
        assertEquals("garbage", new String(Files.readAllBytes(first)));
        assertEquals("more garbage", new String(Files.readAllBytes(second)));
        assertTrue(first.getFileName().toString().matches("gallery\\.bin\\.\\d{8}-\\d{6}(-\\d+)?\\.bak"), first.toString());
        assertEquals(0, store.load(MODEL, 4).size());
    }

    private static List<String> listNames(Path dir) throws IOException {
        try (Stream<Path> files = Files.list(dir)) {
            return files.map(p -> p.getFileName().toString()).filter(n -> !Files.isDirectory(dir.resolve(n)))
                    .sorted().collect(Collectors.toList());
        }
    }
}
