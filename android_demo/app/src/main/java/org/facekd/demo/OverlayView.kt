package org.facekd.demo

import android.content.Context
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.graphics.RectF
import android.graphics.Typeface
import android.util.AttributeSet
import android.view.View
import java.util.Locale
import org.facekd.core.LatencyStats

/**
 * Draws the face box with its label and score over the camera preview, plus a per-stage latency
 * panel (mean, p50, p90 over the last frames).
 *
 * Boxes arrive in the upright analysis image's pixels and are mapped as PreviewView's default
 * FILL_CENTER scale type shows that image (scaled to cover the view, centred, mirrored for the
 * front camera).
 */
class OverlayView @JvmOverloads constructor(context: Context, attrs: AttributeSet? = null) : View(context, attrs) {
    private val density = resources.displayMetrics.density
    private val knownPaint = strokePaint(Color.rgb(60, 220, 90))
    private val unknownPaint = strokePaint(Color.rgb(255, 160, 0))
    private val labelPaint = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        color = Color.WHITE
        textSize = 18f * density
        typeface = Typeface.DEFAULT_BOLD
        setShadowLayer(4f, 0f, 0f, Color.BLACK)
    }
    private val panelPaint = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        color = Color.WHITE
        textSize = 12f * density
        typeface = Typeface.MONOSPACE
    }
    private val panelBackground = Paint().apply { color = Color.argb(150, 0, 0, 0) }

    private var face: FaceResult? = null
    private var imageWidth = 1
    private var imageHeight = 1
    private var mirrored = false
    private var stats: Map<String, LatencyStats> = emptyMap()
    private var accelerator = ""

    private fun strokePaint(color: Int) = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        this.color = color
        style = Paint.Style.STROKE
        strokeWidth = 3f * resources.displayMetrics.density
    }

    /** Shows the latest result (null: no face) for an upright image of the given size. */
    fun show(
        result: FaceResult?,
        width: Int,
        height: Int,
        mirrored: Boolean,
        stats: Map<String, LatencyStats>,
        accelerator: String,
    ) {
        face = result
        imageWidth = width
        imageHeight = height
        this.mirrored = mirrored
        this.stats = stats
        this.accelerator = accelerator
        invalidate()
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        face?.let { drawFace(canvas, it) }
        drawLatency(canvas)
    }

    private fun drawFace(canvas: Canvas, result: FaceResult) {
        val scale = maxOf(width.toFloat() / imageWidth, height.toFloat() / imageHeight)
        val dx = (width - imageWidth * scale) / 2f
        val dy = (height - imageHeight * scale) / 2f
        var left = result.box.left * scale + dx
        var right = result.box.right * scale + dx
        if (mirrored) {
            val mirroredLeft = width - right
            right = width - left
            left = mirroredLeft
        }
        val box = RectF(left, result.box.top * scale + dy, right, result.box.bottom * scale + dy)
        val match = result.recognition.match()
        canvas.drawRect(box, if (match.isKnown) knownPaint else unknownPaint)
        canvas.drawText(labelFor(match), box.left, box.top - 8f * density, labelPaint)
    }

    private fun drawLatency(canvas: Canvas) {
        val lines = mutableListOf("$accelerator   mean / p50 / p90 ms")
        for ((stage, s) in stats) {
            lines += String.format(Locale.ROOT, "%-10s %6.1f %6.1f %6.1f", stage, s.mean(), s.p50(), s.p90())
        }
        val lineHeight = panelPaint.textSize * 1.3f
        val panelHeight = lineHeight * lines.size + 8f * density
        val top = height - panelHeight
        canvas.drawRect(0f, top, width.toFloat(), height.toFloat(), panelBackground)
        lines.forEachIndexed { i, line ->
            canvas.drawText(line, 8f * density, top + lineHeight * (i + 1), panelPaint)
        }
    }

    companion object {
        /** "Ada 0.71", or "unknown 0.23 (Ada?)" below the threshold. */
        fun labelFor(match: org.facekd.core.FaceMatcher.Match): String {
            if (match.candidate() == null) return match.label()
            val score = String.format(Locale.ROOT, "%.2f", match.score())
            return if (match.isKnown) "${match.label()} $score" else "${match.label()} $score (${match.candidate()}?)"
        }
    }
}
