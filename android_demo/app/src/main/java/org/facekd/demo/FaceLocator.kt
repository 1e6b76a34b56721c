package org.facekd.demo

import android.graphics.Bitmap
import android.graphics.RectF
import com.google.android.gms.tasks.Tasks
import com.google.mlkit.vision.common.InputImage
import com.google.mlkit.vision.face.Face
import com.google.mlkit.vision.face.FaceDetection
import com.google.mlkit.vision.face.FaceDetectorOptions
import com.google.mlkit.vision.face.FaceLandmark
import java.io.Closeable

/** A detected face: its box and the five alignment points (x, y) in the image's pixels. */
class LocatedFace(val box: RectF, val landmarks: FloatArray)

/**
 * ML Kit face detection reduced to what alignment needs: eye centres, nose base and mouth corners,
 * ordered as the ArcFace template (image-left eye first, image-left mouth corner first).
 * ML Kit's nose point is the nose base, a little below the template's nose tip; the least-squares
 * similarity absorbs most of that offset.
 */
class FaceLocator : Closeable {
    private val detector = FaceDetection.getClient(
        FaceDetectorOptions.Builder()
            .setPerformanceMode(FaceDetectorOptions.PERFORMANCE_MODE_FAST)
            .setLandmarkMode(FaceDetectorOptions.LANDMARK_MODE_ALL)
            .setMinFaceSize(0.15f)
            .build(),
    )

    /** The largest face with all five landmarks, or null. Blocks: call off the main thread. */
    fun locate(bitmap: Bitmap): LocatedFace? {
        val faces = Tasks.await(detector.process(InputImage.fromBitmap(bitmap, 0)))
        return faces.sortedByDescending { it.boundingBox.width() * it.boundingBox.height() }
            .firstNotNullOfOrNull { toLocatedFace(it) }
    }

    private fun toLocatedFace(face: Face): LocatedFace? {
        val eyes = listOf(FaceLandmark.LEFT_EYE, FaceLandmark.RIGHT_EYE)
            .map { face.getLandmark(it)?.position ?: return null }
            .sortedBy { it.x }
        val nose = face.getLandmark(FaceLandmark.NOSE_BASE)?.position ?: return null
        val mouth = listOf(FaceLandmark.MOUTH_LEFT, FaceLandmark.MOUTH_RIGHT)
            .map { face.getLandmark(it)?.position ?: return null }
            .sortedBy { it.x }
        val points = floatArrayOf(
            eyes[0].x, eyes[0].y, eyes[1].x, eyes[1].y,
            nose.x, nose.y,
            mouth[0].x, mouth[0].y, mouth[1].x, mouth[1].y,
        )
        return LocatedFace(RectF(face.boundingBox), points)
    }

    override fun close() = detector.close()
}
