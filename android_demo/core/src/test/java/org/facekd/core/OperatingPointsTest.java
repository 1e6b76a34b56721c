package org.facekd.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class OperatingPointsTest {
    /** Synthetic points, far descending (threshold ascending), smallest FAR 7.8e-06. */
    static final String POINTS = "{\"source\": \"all pairs of 500 identities (1618 faces) of val_identities.txt\","
            + " \"identities\": 500, \"faces\": 1618, \"genuine_pairs\": 17636, \"impostor_pairs\": 1290000,"
            + " \"min_impostors\": 10, \"points\": ["
            + "{\"far\": 0.01, \"threshold\": 0.21, \"impostors_above\": 12900, \"tar\": 0.995},"
            + "{\"far\": 0.001, \"threshold\": 0.30, \"impostors_above\": 1290, \"tar\": 0.98},"
            + "{\"far\": 0.0001, \"threshold\": 0.37, \"impostors_above\": 129, \"tar\": 0.95},"
            + "{\"far\": 1e-05, \"threshold\": 0.45, \"impostors_above\": 13, \"tar\": 0.90},"
            + "{\"far\": 7.8e-06, \"threshold\": 0.47, \"impostors_above\": 10, \"tar\": 0.88}]}";

    static OperatingPoints points() {
        return OperatingPoints.parse(POINTS, "test");
    }

    /** {@link #POINTS} with one point's JSON replaced. */
    private static ContractException refused(String from, String to) {
        String text = POINTS.replace(from, to);
        assertFalse(text.equals(POINTS), "the replacement must change the points");
        return assertThrows(ContractException.class, () -> OperatingPoints.parse(text, "op.json"));
    }

    @Test
    void parsesPointsAndTheirProvenance() {
        OperatingPoints op = points();
        assertEquals(5, op.points().size());
        assertEquals(0.01, op.largestFar());
        assertEquals(7.8e-06, op.smallestFar());
        assertEquals(0.30, op.points().get(1).threshold());
        assertEquals(1290, op.points().get(1).impostorsAbove());
        assertEquals(0.98, op.points().get(1).tar());
        assertEquals(500, op.identities());
        assertEquals(1618, op.faces());
        assertEquals(17636, op.genuinePairs());
        assertEquals(1290000, op.impostorPairs());
        assertEquals(10, op.minImpostors());
        assertTrue(op.source().startsWith("all pairs of 500 identities"));
        assertEquals("5 points, FAR 0.01 .. 7.8e-06, 1290000 impostor pairs of 500 identities", op.summary());
    }

    @Test
    void verificationTakesTheLargestCalibratedFarNotAboveTheTarget() {
        OperatingPoints op = points();
        assertEquals(0.21, op.verificationThreshold(0.01));
        assertEquals(0.30, op.verificationThreshold(0.005));
        assertEquals(0.30, op.verificationThreshold(0.001));
        assertEquals(0.37, op.verificationThreshold(1e-4));
        assertEquals(0.37, op.verificationThreshold(0.99999999999e-4), "within the 1e-9 relative slack");
        assertEquals(0.45, op.verificationThreshold(0.9999e-4), "outside the slack: the next point");
        assertEquals(0.47, op.verificationThreshold(7.8e-06));
        assertEquals(0.21, op.verificationThreshold(0.5), "above the range: the loosest calibrated point");
    }

    @Test
    void verificationBelowTheCalibratedRangeIsRefused() {
        CalibrationRangeException error = assertThrows(CalibrationRangeException.class,
                () -> points().verificationThreshold(1e-6));
        assertEquals("FAR 1e-06 is below the calibrated range: the smallest supported FAR is 7.8e-06",
                error.getMessage());
        assertEquals(7.8e-06, error.smallestFar());
        assertEquals(1e-6, error.requestedFar());
        assertEquals(-1, error.maxTemplates());
    }

    @Test
    void ratesOutsideTheOpenUnitIntervalAreRefused() {
        OperatingPoints op = points();
        for (double bad : new double[] {0, 1, -0.1, 1.5, Double.NaN, Double.POSITIVE_INFINITY}) {
            IllegalArgumentException far = assertThrows(IllegalArgumentException.class,
                    () -> op.verificationThreshold(bad));
            assertFalse(far instanceof CalibrationRangeException);
            assertTrue(far.getMessage().startsWith("FAR must lie in (0, 1)"), far.getMessage());
            IllegalArgumentException fpir = assertThrows(IllegalArgumentException.class,
                    () -> op.identificationThreshold(bad, 10));
            assertTrue(fpir.getMessage().startsWith("FPIR must lie in (0, 1)"), fpir.getMessage());
        }
    }

    @Test
    void identificationDividesTheFpirByTheGallerysTemplates() {
        OperatingPoints op = points();
        assertEquals(0.21, op.identificationThreshold(0.01, 1));
        assertEquals(0.21, op.identificationThreshold(0.01, 0), "an empty gallery counts as one comparison");
        assertEquals(0.21, op.identificationThreshold(0.01, -3));
        assertEquals(0.30, op.identificationThreshold(0.01, 2));
        assertEquals(0.30, op.identificationThreshold(0.01, 10));
        assertEquals(0.37, op.identificationThreshold(0.01, 100));
        assertEquals(0.37, op.identificationThreshold(0.03, 300), "0.03 / 300 = 9.999999999999999e-05 selects 1e-4");
        assertEquals(0.45, op.identificationThreshold(0.01, 101));
        assertEquals(0.45, op.identificationThreshold(0.01, 1000));
        assertEquals(0.47, op.identificationThreshold(0.01, 1282));
        assertEquals(0.47, op.identificationThreshold(0.1, 12820));
    }

    /** {@link #POINTS} with open-set galleries of 10 and 100 people calibrated at FPIR 0.01 and 0.001. */
    static OperatingPoints withGalleries() {
        String galleries = ", \"identification\": ["
                + "{\"gallery_size\": 10, \"fpir\": 0.01, \"threshold\": 0.33, \"strangers_above\": 700, \"probes\": 70000},"
                + "{\"gallery_size\": 10, \"fpir\": 0.001, \"threshold\": 0.40, \"strangers_above\": 60, \"probes\": 70000},"
                + "{\"gallery_size\": 100, \"fpir\": 0.01, \"threshold\": 0.41, \"strangers_above\": 500, \"probes\": 50000},"
                + "{\"gallery_size\": 100, \"fpir\": 0.001, \"threshold\": 0.50, \"strangers_above\": 40, \"probes\": 50000}]}";
        return OperatingPoints.parse(POINTS.substring(0, POINTS.length() - 1) + galleries, "test");
    }

    @Test
    void identificationIsNoLowerThanTheCalibratedGallerysThreshold() {
        OperatingPoints op = withGalleries();
        assertEquals(4, op.galleries().size());
        assertEquals(0.33, op.identificationThreshold(0.01, 1), "the 10-person gallery is stricter than FAR 0.01");
        assertEquals(0.33, op.identificationThreshold(0.01, 10));
        assertEquals(0.41, op.identificationThreshold(0.01, 11), "the smallest calibrated gallery >= 11 is 100");
        assertEquals(0.41, op.identificationThreshold(0.01, 100), "the gallery's 0.41 over the FAR rule's 0.37");
        assertEquals(0.45, op.identificationThreshold(0.01, 101), "beyond the galleries: the FAR rule where higher");
        assertEquals(0.41, op.identificationThreshold(0.05, 100), "the largest calibrated FPIR <= 0.05 is 0.01");
        assertEquals(0.50, op.identificationThreshold(0.005, 100), "FPIR 0.005: the 0.001 gallery point");
        assertEquals(0.37, op.identificationThreshold(0.0009, 1), "no gallery point at or below FPIR 0.0009");
        assertEquals(points().verificationThreshold(1e-4), op.verificationThreshold(1e-4), "verification is unchanged");
    }

    @Test
    void malformedGalleryPointsAreRefused() {
        String bad = POINTS.substring(0, POINTS.length() - 1)
                + ", \"identification\": [{\"gallery_size\": 0, \"fpir\": 0.01, \"threshold\": 0.4}]}";
        ContractException error = assertThrows(ContractException.class, () -> OperatingPoints.parse(bad, "op.json"));
        assertEquals("op.json: operating_points.identification[0]: 'gallery_size' must be a positive integer",
                error.getMessage());
        String far = bad.replace("\"gallery_size\": 0, \"fpir\": 0.01", "\"gallery_size\": 5, \"fpir\": 1.5");
        assertThrows(ContractException.class, () -> OperatingPoints.parse(far, "op.json"));
    }

    @Test
    void identificationPastTheCalibratedRangeSaysHowManyTemplatesFit() {
        OperatingPoints op = points();
        assertEquals(1282, op.maxTemplates(0.01));
        CalibrationRangeException error = assertThrows(CalibrationRangeException.class,
                () -> op.identificationThreshold(0.01, 2000));
        assertEquals("a gallery of 2000 templates at FPIR 0.01 needs a per-comparison FAR of 5e-06, below the"
                + " calibrated range (smallest 7.8e-06): enrol at most 1282 templates or raise the FPIR",
                error.getMessage());
        assertEquals(1282, error.maxTemplates());
        assertThrows(CalibrationRangeException.class, () -> op.identificationThreshold(0.01, 1283));
        CalibrationRangeException tiny = assertThrows(CalibrationRangeException.class,
                () -> op.identificationThreshold(1e-6, 1));
        assertEquals("a gallery of 1 templates at FPIR 1e-06 needs a per-comparison FAR of 1e-06, below the"
                + " calibrated range (smallest 7.8e-06): enrol at most 0 templates or raise the FPIR",
                tiny.getMessage());
    }

    @Test
    void formatsNumbersLikePythonsPercentG() {
        assertEquals("1e-06", OperatingPoints.formatG(1e-6));
        assertEquals("7.8e-06", OperatingPoints.formatG(7.8e-6));
        assertEquals("5e-06", OperatingPoints.formatG(0.01 / 2000));
        assertEquals("7.80031e-06", OperatingPoints.formatG(0.01 / 1282));
        assertEquals("0.01", OperatingPoints.formatG(0.01));
        assertEquals("0.0001", OperatingPoints.formatG(1e-4));
        assertEquals("0.0001", OperatingPoints.formatG(0.03 / 300));
        assertEquals("0.333333", OperatingPoints.formatG(1.0 / 3));
        assertEquals("2", OperatingPoints.formatG(2.0));
        assertEquals("100000", OperatingPoints.formatG(1e5));
        assertEquals("1e+06", OperatingPoints.formatG(999999.5));
        assertEquals("1.23457e+08", OperatingPoints.formatG(123456789));
        assertEquals("-0.37", OperatingPoints.formatG(-0.37));
        assertEquals("1e-100", OperatingPoints.formatG(1e-100));
        assertEquals("0", OperatingPoints.formatG(0));
        assertEquals("7.8e-06", OperatingPoints.formatG(0.01 / 1282, 2));
        assertEquals("0.00099", OperatingPoints.formatG(0.1 / 101, 2));
        assertEquals("0.12", OperatingPoints.formatG(0.125, 2), "round half to even, as Python");
        assertEquals("1.2e+02", OperatingPoints.formatG(123, 2));
        assertEquals("5", OperatingPoints.formatG(5, 2));
    }

    @Test
    void capacityUsesTheSelectionsSlack() {
        OperatingPoints op = OperatingPoints.parse("{\"points\": [{\"far\": 0.001, \"threshold\": 0.3},"
                + " {\"far\": 1e-05, \"threshold\": 0.4}]}", "op");
        assertEquals(1000, op.maxTemplates(0.01), "0.01 / 1e-05 = 999.9999999999999 in double");
        assertEquals(0.4, op.identificationThreshold(0.01, 1000));
        CalibrationRangeException error = assertThrows(CalibrationRangeException.class,
                () -> op.identificationThreshold(0.01, 1001));
        assertTrue(error.getMessage().endsWith("enrol at most 1000 templates or raise the FPIR"), error.getMessage());
        assertEquals(2999, (int) Math.floor(0.03 / 1e-05));
        assertEquals(3000, op.maxTemplates(0.03));
    }

    @Test
    void badPointsAreRefused() {
        assertTrue(refused("\"points\": [", "\"points\": [], \"old\": [").getMessage().contains("'points' is empty"));
        assertTrue(refused("\"far\": 0.01,", "\"far\": 0,").getMessage().contains("far 0.0 is not in (0, 1)"));
        assertTrue(refused("\"far\": 0.01,", "\"far\": 1,").getMessage().contains("not in (0, 1)"));
        assertTrue(refused("\"threshold\": 0.21", "\"threshold\": 1.5").getMessage()
                .contains("threshold 1.5 is not a cosine in [-1, 1]"));
        ContractException unsorted = refused("\"far\": 0.001,", "\"far\": 0.02,");
        assertTrue(unsorted.getMessage().contains("points[1]: far 0.02 does not fall below"), unsorted.getMessage());
        assertTrue(refused("\"far\": 0.001,", "\"far\": 0.01,").getMessage().contains("sorted by far descending"));
        ContractException loosening = refused("\"threshold\": 0.30", "\"threshold\": 0.20");
        assertTrue(loosening.getMessage().contains("points[1]: threshold 0.2 is below the previous point's 0.21"),
                loosening.getMessage());
        assertTrue(refused("\"far\": 0.01, ", "").getMessage().contains("'far' is missing"));
        assertTrue(refused("\"threshold\": 0.21", "\"threshold\": \"0.21\"").getMessage().contains("must be a number"));
        assertTrue(refused("\"tar\": 0.995", "\"tar\": 1.5").getMessage().contains("tar 1.5"));
        assertTrue(refused("\"impostors_above\": 12900", "\"impostors_above\": -1").getMessage()
                .contains("'impostors_above' must be a non-negative integer"));
        assertTrue(refused("\"impostor_pairs\": 1290000", "\"impostor_pairs\": 12.5").getMessage()
                .contains("'impostor_pairs' must be a non-negative integer"));
        assertTrue(refused("\"points\": [{", "\"points\": [3, {").getMessage().contains("must be an object"));
        refused("\"far\": 0.01,", "\"far\": NaN,"); // not JSON: the parser refuses it
        ContractException named = refused("\"far\": 0.01,", "\"far\": 0,");
        assertTrue(named.getMessage().startsWith("op.json: operating_points.points[0]"), named.getMessage());
        assertThrows(ContractException.class, () -> OperatingPoints.parse("{\"points\": null}", "op.json"));
        assertThrows(ContractException.class, () -> OperatingPoints.parse("[]", "op.json"));
    }

    @Test
    void aSinglePointIsEnough() {
        OperatingPoints op = OperatingPoints.parse("{\"points\": [{\"far\": 0.001, \"threshold\": 0.3}]}", "op");
        assertEquals(0.3, op.verificationThreshold(0.001));
        assertEquals(-1, op.impostorPairs());
        assertEquals(-1, op.points().get(0).impostorsAbove());
        assertTrue(Double.isNaN(op.points().get(0).tar()));
        assertEquals("", op.source());
        assertEquals("1 point, FAR 0.001", op.summary());
    }
}
