package org.facekd.core.golden;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.facekd.core.ContractException;
import org.facekd.core.FaceMatcher;
import org.facekd.core.Gallery;
import org.facekd.core.Json;
import org.facekd.core.MatchPolicy;
import org.facekd.core.OperatingPoints;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestReporter;

/**
 * The 1:N rule on real faces: {@code golden/identification.json} (PyTorch embeddings written by the
 * export) enrols 100 people with one face each; the identification threshold the Java rule picks
 * at the fixture's FPIR must be the export's, and FaceMatcher must name the same number of
 * strangers (at most FPIR of them) and find the same number of enrolled people as Python did.
 */
class GoldenIdentificationTest {
    static final int SCHEMA_VERSION = 1;
    static final String FILE = "identification.json";

    /** One face of the fixture. */
    private static final class Face {
        final String name;
        final float[] embedding;

        Face(Json.Obj json) {
            name = json.string("name");
            embedding = json.floats("embedding");
        }
    }

    private static List<Face> faces(Json.Obj json, String key) {
        List<Face> out = new ArrayList<>();
        for (Json.Obj item : json.objects(key)) {
            out.add(new Face(item));
        }
        return out;
    }

    @Test
    void identificationAtTheFpirMatchesTheExport(TestReporter reporter) throws IOException {
        ExportFolder export = ExportFolder.configured().orElse(null);
        assumeTrue(export != null, "no export folder: pass one to run_tests.sh or set FACEKD_EXPORT");
        Path file = export.goldenDir().resolve(FILE);
        assumeTrue(Files.isRegularFile(file), "no golden/" + FILE + " in " + export.root()
                + " (exported before operating points existed)");

        Json.Obj json = Json.Obj.of(Json.parse(new String(Files.readAllBytes(file), StandardCharsets.UTF_8)), FILE);
        int schema = json.integer("schema_version");
        if (schema != SCHEMA_VERSION) {
            throw new ContractException(FILE + " schema_version " + schema + ", this test reads " + SCHEMA_VERSION);
        }
        double fpir = json.number("fpir");
        OperatingPoints points = OperatingPoints.fromJson(json.object("operating_points"));
        List<Face> enrolled = faces(json, "gallery");
        List<Face> mated = faces(json, "mated");
        List<Face> strangers = faces(json, "strangers");
        Json.Obj expected = json.object("expected");
        assertFalse(enrolled.isEmpty(), FILE + ": empty gallery");
        assertFalse(mated.isEmpty(), FILE + ": no mated probes");
        assertFalse(strangers.isEmpty(), FILE + ": no strangers");

        Gallery gallery = new Gallery("golden", enrolled.get(0).embedding.length);
        for (Face face : enrolled) {
            gallery.enrol(face.name, face.embedding);
        }
        assertEquals(enrolled.size(), gallery.size(), FILE + ": gallery names must be distinct (one template each)");
        assertEquals(enrolled.size(), gallery.templateCount());
        for (Face stranger : strangers) {
            assertEquals(0, gallery.templateCount(stranger.name), stranger.name + " is a stranger but enrolled");
        }

        FaceMatcher matcher = new FaceMatcher(gallery, MatchPolicy.identification(points, fpir));
        double threshold = matcher.threshold();
        assertEquals(points.identificationThreshold(fpir, enrolled.size()), threshold);
        assertEquals(expected.number("threshold"), threshold, 1e-12,
                "identification threshold at FPIR " + fpir + " for " + enrolled.size() + " templates");

        int strangersMatched = 0;
        for (Face stranger : strangers) {
            FaceMatcher.Match match = matcher.match(stranger.embedding);
            assertEquals(threshold, match.threshold());
            if (match.isKnown()) {
                strangersMatched++;
            }
        }
        int matedFound = 0;
        for (Face probe : mated) {
            assertTrue(gallery.templateCount(probe.name) > 0, probe.name + " is a mated probe but not enrolled");
            FaceMatcher.Match match = matcher.match(probe.embedding);
            if (probe.name.equals(match.label())) { // best candidate is them and score >= threshold
                matedFound++;
            }
        }
        double strangerShare = (double) strangersMatched / strangers.size();
        reporter.publishEntry("identification", String.format(Locale.ROOT,
                "FPIR %s, %d templates, threshold %.4f: %d of %d strangers named (%.4f), %d of %d mated found",
                OperatingPoints.formatG(fpir), enrolled.size(), threshold, strangersMatched, strangers.size(),
                strangerShare, matedFound, mated.size()));

        // scores within the export's tolerance of the threshold may fall either way in float32 arithmetic
        assertTrue(Math.abs(expected.integer("strangers_matched") - strangersMatched) <= borderline(expected, "strangers"),
                "strangers named as someone: " + strangersMatched + ", Python " + expected.integer("strangers_matched"));
        // "at most the FPIR" on a finite set of strangers: not significantly above it (one-sided binomial, 5 %)
        assertTrue(strangersMatched <= binomialQuantile(strangers.size(), fpir, 0.95), strangersMatched + " of "
                + strangers.size() + " strangers named: significantly more than FPIR " + fpir);
        assertTrue(Math.abs(expected.integer("mated_found") - matedFound) <= borderline(expected, "mated"),
                "mated probes identified as themselves: " + matedFound + ", Python " + expected.integer("mated_found"));
        assertTrue(matedFound > 0, "no mated probe was found at threshold " + threshold);
    }

    /** Probes of {@code kind} whose Python score lies within the export's tolerance of the threshold (0 if not recorded). */
    static int borderline(Json.Obj expected, String kind) {
        String key = kind + "_borderline";
        return expected.has(key) ? expected.integer(key) : 0;
    }

    /** Smallest k with P(X <= k) >= q for X ~ Binomial(n, p). */
    static int binomialQuantile(int n, double p, double q) {
        double term = Math.pow(1 - p, n);
        double cumulative = term;
        int k = 0;
        while (cumulative < q && k < n) {
            term *= (double) (n - k) / (k + 1) * p / (1 - p);
            cumulative += term;
            k++;
        }
        return k;
    }
}
