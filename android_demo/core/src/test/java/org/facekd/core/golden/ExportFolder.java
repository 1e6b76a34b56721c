package org.facekd.core.golden;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.Optional;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * An export run folder: {@code tflite-<precision>/{model.tflite,manifest.json}} and
 * {@code golden/golden.json} with its PNGs and raw float32 tensors.
 *
 * <p>Found through the system property {@code facekd.export} (set by run_tests.sh) or the
 * environment variable {@code FACEKD_EXPORT}.
 */
public final class ExportFolder {
    public static final String PROPERTY = "facekd.export";
    public static final String ENVIRONMENT = "FACEKD_EXPORT";

    private final Path root;

    private ExportFolder(Path root) {
        this.root = root;
    }

    /** The configured export folder, or empty when none is configured. */
    public static Optional<ExportFolder> configured() {
        String value = System.getProperty(PROPERTY);
        if (value == null || value.isEmpty()) {
            value = System.getenv(ENVIRONMENT);
        }
        if (value == null || value.isEmpty()) {
            return Optional.empty();
        }
        Path root = Paths.get(value);
        if (!Files.isDirectory(root)) {
            throw new IllegalStateException("export folder " + root + " does not exist");
        }
        return Optional.of(new ExportFolder(root));
    }

    public Path root() {
        return root;
    }

    public Path goldenDir() {
        return root.resolve("golden");
    }

    /** Folders named {@code tflite*} that hold a manifest.json, sorted by name. */
    public List<Path> tfliteArtifacts() throws IOException {
        try (Stream<Path> children = Files.list(root)) {
            return children.filter(p -> p.getFileName().toString().startsWith("tflite"))
                    .filter(p -> Files.isRegularFile(p.resolve("manifest.json")))
                    .sorted()
                    .collect(Collectors.toList());
        }
    }
}
