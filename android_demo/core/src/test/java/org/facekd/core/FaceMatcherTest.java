package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class FaceMatcherTest {
    private static Gallery gallery() {
        Gallery gallery = new Gallery("sha", 3);
        gallery.enrol("Ada", new float[] {1f, 0f, 0f});
        gallery.enrol("Ada", new float[] {0f, 0f, 1f});
        gallery.enrol("Bob", new float[] {0f, 1f, 0f});
        return gallery;
    }

    @Test
    void bestTemplateOfAnyPersonWins() {
        FaceMatcher matcher = new FaceMatcher(gallery(), 0.5);
        FaceMatcher.Match match = matcher.match(new float[] {0.1f, 0.2f, 0.9f});
        assertTrue(match.isKnown());
        assertEquals("Ada", match.label());
        assertEquals(0.9 / Math.sqrt(0.86), match.score(), 1e-6);
        assertEquals("Bob", matcher.match(new float[] {0.2f, 3f, 0.1f}).label());
    }

    @Test
    void belowThresholdIsUnknownButKeepsTheCandidate() {
        FaceMatcher.Match match = new FaceMatcher(gallery(), 0.8).match(new float[] {1f, 1f, 0f});
        assertFalse(match.isKnown());
        assertEquals(FaceMatcher.UNKNOWN, match.label());
        assertEquals("Ada", match.candidate());
        assertEquals(Math.sqrt(0.5), match.score(), 1e-6);
    }

    @Test
    void scoreEqualToThresholdMatches() {
        assertTrue(FaceMatcher.isMatch(0.42, 0.42));
        assertFalse(FaceMatcher.isMatch(0.4199999, 0.42));
        assertTrue(new FaceMatcher(gallery(), 1.0).match(new float[] {0f, 2f, 0f}).isKnown());
    }

    @Test
    void emptyGalleryIsUnknown() {
        FaceMatcher.Match match = new FaceMatcher(new Gallery("sha", 3), -1.0).match(new float[] {1f, 0f, 0f});
        assertEquals(FaceMatcher.UNKNOWN, match.label());
        assertNull(match.candidate());
    }

    @Test
    void refusesBadThresholdAndDimension() {
        assertThrows(IllegalArgumentException.class, () -> new FaceMatcher(gallery(), 1.5));
        assertThrows(IllegalArgumentException.class, () -> new FaceMatcher(gallery(), Double.NaN));
        assertThrows(IllegalArgumentException.class, () -> new FaceMatcher(gallery(), 0.5).match(new float[4]));
    }

    @Test
    void seesGalleryChangesMadeAfterConstruction() {
        Gallery gallery = gallery();
        FaceMatcher matcher = new FaceMatcher(gallery, 0.5);
        gallery.delete("Bob");
        assertEquals(FaceMatcher.UNKNOWN, matcher.match(new float[] {0f, 1f, 0f}).label());
    }
}
