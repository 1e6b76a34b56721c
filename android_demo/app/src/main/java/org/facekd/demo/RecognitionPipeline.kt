package org.facekd.demo

import android.graphics.Bitmap
import android.graphics.RectF
import java.io.Closeable
import org.facekd.core.FaceAligner
import org.facekd.core.FaceMatcher
import org.facekd.core.FaceRecognizer
import org.facekd.core.Gallery
import org.facekd.core.GalleryStore
import org.facekd.core.LatencyRecorder
import org.facekd.core.MatchPolicy

/** One processed face: where it is, the aligned crop the model saw, and who it is. */
class FaceResult(
    /** Face box in the processed image's pixels. */
    val box: RectF,
    /** The aligned size×size crop (ARGB) fed to the model. */
    val crop: IntArray,
    val cropSize: Int,
    val recognition: FaceRecognizer.Recognition,
)

/**
 * detect (ML Kit) → align (5-point similarity) → preprocess → LiteRT → match, with each stage
 * timed. Everything that touches the engine runs on the caller's single worker thread.
 *
 * Matching is 1:N identification at [IDENTIFICATION_FPIR]: the threshold comes from the manifest's
 * operating points for the gallery's current number of templates (stricter as people enrol). An
 * old manifest without operating points falls back to its best-accuracy threshold, and
 * [policyWarning] says so.
 */
class RecognitionPipeline(
    private val bundle: ModelBundle,
    private val engine: LiteRtEngine,
    val gallery: Gallery,
    private val store: GalleryStore,
) : Closeable {
    val latency = LatencyRecorder(LATENCY_WINDOW)
    private val recognizer = FaceRecognizer(bundle.manifest, engine, latency)
    val policy: MatchPolicy = MatchPolicy.identification(bundle.manifest, IDENTIFICATION_FPIR)
    private val matcher = FaceMatcher(gallery, policy)
    private val locator = FaceLocator()
    private val cropSize = bundle.manifest.preprocess().size()

    val accelerator: String get() = engine.accelerator.name
    val fallbackReason: String? get() = engine.fallbackReason

    /** Shown to the user when the manifest has no operating points (old export); null otherwise. */
    val policyWarning: String? get() = policy.warning()

    /** e.g. "1:N identification at FPIR 0.01, 12 templates: threshold 0.3712", for the gallery as it is now. */
    val policyDescription: String get() = policy.describe(gallery.templateCount())

    /** Finds, aligns and identifies the largest face in a camera frame; null when there is none. */
    fun processFrame(frame: Bitmap): FaceResult? {
        val frameStart = System.nanoTime()
        var start = System.nanoTime()
        val face = locator.locate(frame) ?: return null
        latency.recordSince(STAGE_DETECT, start)
        start = System.nanoTime()
        val crop = FaceAligner.align(pixels(frame), frame.width, frame.height, face.landmarks, cropSize)
        latency.recordSince(STAGE_ALIGN, start)
        val recognition = recognizer.identify(crop, cropSize, cropSize, matcher)
        latency.recordSince(STAGE_TOTAL, frameStart)
        return FaceResult(face.box, crop, cropSize, recognition)
    }

    /**
     * A picked photo: aligned like a frame if ML Kit finds a face, otherwise taken as an already
     * aligned crop (e.g. an LFW aligned image) and only resized, as the Python side does.
     */
    fun processPhoto(photo: Bitmap): FaceResult {
        processFrame(photo)?.let { return it }
        val argb = pixels(photo)
        val recognition = recognizer.identify(argb, photo.width, photo.height, matcher)
        val box = RectF(0f, 0f, photo.width.toFloat(), photo.height.toFloat())
        val crop = Bitmap.createScaledBitmap(photo, cropSize, cropSize, true)
        return FaceResult(box, pixels(crop), cropSize, recognition)
    }

    /**
     * Adds a template for [name] and saves the gallery atomically. Refused (CalibrationRangeException,
     * "enrol at most M templates or raise the FPIR") when one more template would need a FAR below
     * the manifest's calibrated range.
     */
    fun enrol(name: String, embedding: FloatArray) {
        policy.threshold(gallery.templateCount() + 1) // throws if the larger gallery cannot keep the FPIR
        gallery.enrol(name, embedding)
        store.save(gallery)
    }

    /** Removes [name] and saves the gallery atomically. */
    fun delete(name: String) {
        if (gallery.delete(name)) {
            store.save(gallery)
        }
    }

    override fun close() {
        locator.close()
        engine.close()
    }

    private fun pixels(bitmap: Bitmap): IntArray {
        val argb = IntArray(bitmap.width * bitmap.height)
        bitmap.getPixels(argb, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
        return argb
    }

    companion object {
        const val STAGE_DETECT = "detect"
        const val STAGE_ALIGN = "align"
        const val STAGE_TOTAL = "total"

        /** Share of strangers that may be named as someone (false positive identification rate). */
        val IDENTIFICATION_FPIR: Double = MatchPolicy.DEFAULT_IDENTIFICATION_FPIR
        private const val LATENCY_WINDOW = 100
    }
}
