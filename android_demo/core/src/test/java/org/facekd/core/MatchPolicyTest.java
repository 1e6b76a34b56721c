package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class MatchPolicyTest {
    private static final String SHA = "ab".repeat(32);

    /** A valid manifest with best-accuracy threshold 0.25 and the given operating_points JSON (or none). */
    static ModelManifest manifest(String operatingPoints) {
        String base = ModelManifestTest.manifest("NCHW", "[1, 3, 112, 112]", SHA, "0.25");
        String text = operatingPoints == null ? base
                : base.substring(0, base.lastIndexOf('}')) + ", \"operating_points\": " + operatingPoints + "}";
        return ModelManifest.parse(text, "manifest.json");
    }

    @Test
    void manifestParsesOptionalOperatingPoints() {
        ModelManifest m = manifest(OperatingPointsTest.POINTS);
        assertTrue(m.hasOperatingPoints());
        assertEquals(7.8e-06, m.operatingPoints().smallestFar());
        assertEquals(0.25, m.threshold());
        for (String old : new String[] {null, "null"}) {
            ModelManifest legacy = manifest(old);
            assertFalse(legacy.hasOperatingPoints());
            ContractException error = assertThrows(ContractException.class, legacy::operatingPoints);
            assertTrue(error.getMessage().contains("re-export with facekd export"), error.getMessage());
        }
    }

    @Test
    void manifestWithBadOperatingPointsIsRefused() {
        ContractException error = assertThrows(ContractException.class,
                () -> manifest(OperatingPointsTest.POINTS.replace("\"far\": 0.001,", "\"far\": 0.5,")));
        assertTrue(error.getMessage().startsWith("manifest.json: operating_points.points[1]: far 0.5"),
                error.getMessage());
        assertThrows(ContractException.class, () -> manifest("[]"));
        assertThrows(ContractException.class, () -> manifest("{\"points\": []}"));
        assertThrows(ContractException.class, () -> manifest("{}"));
    }

    @Test
    void defaultsAreFar1e4AndFpirOnePercent() {
        ModelManifest m = manifest(OperatingPointsTest.POINTS);
        MatchPolicy verification = MatchPolicy.verification(m);
        assertSame(MatchPolicy.Mode.VERIFICATION, verification.mode());
        assertEquals(1e-4, verification.rate());
        assertEquals(0.37, verification.threshold(1));
        assertEquals(0.37, verification.threshold(5000), "verification ignores the gallery");
        assertEquals(Integer.MAX_VALUE, verification.maxTemplates());
        MatchPolicy identification = MatchPolicy.identification(m);
        assertSame(MatchPolicy.Mode.IDENTIFICATION, identification.mode());
        assertEquals(0.01, identification.rate());
        assertTrue(identification.usesOperatingPoints());
        assertNull(identification.warning());
        assertFalse(identification.hasWarning());
        assertEquals(1282, identification.maxTemplates());
        assertEquals("1:N identification at FPIR 0.01", identification.toString());
        assertEquals("1:N identification at FPIR 0.01, 100 templates: threshold 0.3700", identification.describe(100));
        assertEquals("1:1 verification at FAR 0.0001: threshold 0.3700", verification.describe(7));
    }

    @Test
    void identificationTightensAsTheGalleryGrows() {
        MatchPolicy policy = MatchPolicy.identification(manifest(OperatingPointsTest.POINTS), 0.01);
        assertEquals(0.21, policy.threshold(0));
        assertEquals(0.21, policy.threshold(1));
        assertEquals(0.30, policy.threshold(10));
        assertEquals(0.37, policy.threshold(100));
        assertEquals(0.45, policy.threshold(1000));
        assertEquals(0.47, policy.threshold(1282));
        CalibrationRangeException error = assertThrows(CalibrationRangeException.class, () -> policy.threshold(1283));
        assertTrue(error.getMessage().endsWith("enrol at most 1282 templates or raise the FPIR"), error.getMessage());
        assertTrue(policy.describe(2000).startsWith("1:N identification at FPIR 0.01, 2000 templates: threshold none"));
    }

    @Test
    void configurableRatesAndUncalibratedOnesRefusedUpFront() {
        ModelManifest m = manifest(OperatingPointsTest.POINTS);
        assertEquals(0.30, MatchPolicy.verification(m, 0.001).threshold(1));
        assertEquals(0.30, MatchPolicy.identification(m, 0.1).threshold(100));
        CalibrationRangeException far = assertThrows(CalibrationRangeException.class,
                () -> MatchPolicy.verification(m, 1e-6));
        assertEquals("FAR 1e-06 is below the calibrated range: the smallest supported FAR is 7.8e-06", far.getMessage());
        assertThrows(CalibrationRangeException.class, () -> MatchPolicy.identification(m, 1e-6));
        assertThrows(IllegalArgumentException.class, () -> MatchPolicy.identification(m, 0));
        assertThrows(IllegalArgumentException.class, () -> MatchPolicy.verification(m, 1));
        OperatingPoints points = m.operatingPoints();
        assertEquals(0.37, MatchPolicy.identification(points, 0.01).threshold(100));
        assertEquals(0.45, MatchPolicy.verification(points, 1e-5).threshold(100));
    }

    @Test
    void oldManifestFallsBackToItsThresholdWithAWarning() {
        ModelManifest legacy = manifest(null);
        for (MatchPolicy policy : new MatchPolicy[] {MatchPolicy.identification(legacy),
                MatchPolicy.verification(legacy), MatchPolicy.identification(legacy, 0.001)}) {
            assertFalse(policy.usesOperatingPoints());
            assertTrue(policy.hasWarning());
            assertEquals(MatchPolicy.NO_OPERATING_POINTS_WARNING, policy.warning());
            assertEquals(0.25, policy.threshold(1));
            assertEquals(0.25, policy.threshold(100000), "the fallback does not depend on the gallery");
            assertEquals(Integer.MAX_VALUE, policy.maxTemplates());
            assertThrows(IllegalStateException.class, policy::operatingPoints);
        }
        assertEquals("manifest has no operating points (exported before they existed): using its best-accuracy"
                + " threshold, which accepts far more strangers; re-export with facekd export",
                MatchPolicy.identification(legacy).warning());
        assertTrue(MatchPolicy.identification(legacy).describe(3).endsWith("(manifest's best-accuracy threshold)"));
        ModelManifest noThreshold = ModelManifest.parse(
                ModelManifestTest.manifest("NCHW", "[1, 3, 112, 112]", SHA, "null"), "m");
        ContractException error = assertThrows(ContractException.class, () -> MatchPolicy.identification(noThreshold));
        assertTrue(error.getMessage().contains("no threshold"), error.getMessage());
    }

    @Test
    void fixedThresholdIgnoresTheGallery() {
        MatchPolicy fixed = MatchPolicy.fixed(0.4);
        assertSame(MatchPolicy.Mode.FIXED, fixed.mode());
        assertEquals(0.4, fixed.threshold(1));
        assertEquals(0.4, fixed.threshold(1 << 20));
        assertNull(fixed.warning());
        assertThrows(IllegalArgumentException.class, () -> MatchPolicy.fixed(-1.5));
        assertThrows(IllegalArgumentException.class, () -> MatchPolicy.fixed(Double.NaN));
    }
}
