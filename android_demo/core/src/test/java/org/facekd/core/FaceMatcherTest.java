package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
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

    /** Points whose thresholds are far apart, so the probe's fate shows which one was chosen. */
    private static MatchPolicy steepPolicy() {
        return MatchPolicy.identification(OperatingPoints.parse("{\"points\": ["
                + "{\"far\": 0.1, \"threshold\": 0.5}, {\"far\": 0.01, \"threshold\": 0.8},"
                + " {\"far\": 0.001, \"threshold\": 0.95}]}", "test"), 0.1);
    }

    @Test
    void identificationThresholdTightensAsTheGalleryGrows() {
        Gallery gallery = new Gallery("sha", 3);
        gallery.enrol("Ada", new float[] {1f, 0f, 0f});
        FaceMatcher matcher = new FaceMatcher(gallery, steepPolicy());
        float[] probe = {0.7f, (float) Math.sqrt(1 - 0.49), 0f}; // cosine 0.7 with Ada, 0 with Zed

        FaceMatcher.Match alone = matcher.match(probe);
        assertEquals(0.5, alone.threshold());
        assertEquals(1, alone.templates());
        assertEquals("Ada", alone.label());

        for (int i = 0; i < 9; i++) {
            gallery.enrol("Zed", new float[] {0f, 0f, 1f});
        }
        assertEquals(10, gallery.templateCount());
        assertEquals(0.8, matcher.threshold());
        FaceMatcher.Match ten = matcher.match(probe);
        assertEquals(0.8, ten.threshold());
        assertEquals(10, ten.templates());
        assertEquals(FaceMatcher.UNKNOWN, ten.label(), "0.7 < 0.8: the larger gallery needs a stricter threshold");
        assertEquals("Ada", ten.candidate());

        for (int i = 0; i < 90; i++) {
            gallery.enrol("Zed", new float[] {0f, 0f, 1f});
        }
        assertEquals(0.95, matcher.match(probe).threshold(), "0.1 / 100 = 0.001: the strictest point");
        assertEquals(100, matcher.policy().maxTemplates());

        gallery.enrol("Eve", new float[] {0f, 1f, 0f});
        CalibrationRangeException error = assertThrows(CalibrationRangeException.class, () -> matcher.match(probe));
        assertEquals("a gallery of 101 templates at FPIR 0.1 needs a per-comparison FAR of 0.00099, below the"
                + " calibrated range (smallest 0.001): enrol at most 100 templates or raise the FPIR", error.getMessage());

        gallery.delete("Zed"); // back to 2 templates: the threshold loosens again
        FaceMatcher.Match small = matcher.match(probe);
        assertEquals(0.8, small.threshold());
        assertEquals(2, small.templates());
        gallery.delete("Eve");
        assertEquals("Ada", matcher.match(probe).label());
    }

    @Test
    void fixedThresholdMatcherKeepsItsThreshold() {
        Gallery gallery = gallery();
        FaceMatcher matcher = new FaceMatcher(gallery, 0.5);
        assertSame(MatchPolicy.Mode.FIXED, matcher.policy().mode());
        for (int i = 0; i < 50; i++) {
            gallery.enrol("Bob", new float[] {0f, 1f, 0f});
        }
        assertEquals(0.5, matcher.threshold());
        assertEquals(0.5, matcher.match(new float[] {1f, 0f, 0f}).threshold());
        assertEquals(53, matcher.match(new float[] {1f, 0f, 0f}).templates());
    }

    @Test
    void emptyGalleryUsesTheOneComparisonThreshold() {
        FaceMatcher.Match match = new FaceMatcher(new Gallery("sha", 3), steepPolicy()).match(new float[] {1f, 0f, 0f});
        assertEquals(0.5, match.threshold());
        assertEquals(0, match.templates());
        assertEquals(FaceMatcher.UNKNOWN, match.label());
    }
}
