package org.facekd.core;

/**
 * A false accept rate asked of {@link OperatingPoints} that is below the smallest one the export
 * calibrated (too few impostor pairs to measure it): no threshold can be promised for it.
 *
 * <p>For 1:N identification the message says how many templates the gallery may hold at the
 * requested FPIR ({@link #maxTemplates()}); the app should refuse to enrol more, or raise the FPIR.
 */
public class CalibrationRangeException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    private final double requestedFar;
    private final double smallestFar;
    private final int maxTemplates;

    CalibrationRangeException(String message, double requestedFar, double smallestFar, int maxTemplates) {
        super(message);
        this.requestedFar = requestedFar;
        this.smallestFar = smallestFar;
        this.maxTemplates = maxTemplates;
    }

    /** The per-comparison FAR that was asked for. */
    public double requestedFar() {
        return requestedFar;
    }

    /** The smallest FAR the operating points support. */
    public double smallestFar() {
        return smallestFar;
    }

    /** For identification: the most templates a gallery may hold at the FPIR; -1 for verification. */
    public int maxTemplates() {
        return maxTemplates;
    }
}
