package org.facekd.core;

import java.io.IOException;
import java.nio.file.Path;

/** A gallery file that cannot be used; the file itself is left untouched. */
public final class GalleryFileException extends IOException {
    private static final long serialVersionUID = 1L;

    /** Why the file was refused. */
    public enum Reason {
        /** Not a gallery, truncated or failing its checksum. */
        CORRUPT,
        /** Written by a newer app with a format this one does not read. */
        NEWER_FORMAT,
        /** Enrolled with a different model: its templates are not comparable. */
        OTHER_MODEL
    }

    private final Reason reason;
    private final Path file;

    GalleryFileException(Reason reason, Path file, String detail) {
        super("gallery " + file + " " + detail + "; the file was left untouched: move it aside "
                + "(GalleryStore.moveAside) to start a new gallery");
        this.reason = reason;
        this.file = file;
    }

    public Reason reason() {
        return reason;
    }

    public Path file() {
        return file;
    }
}
