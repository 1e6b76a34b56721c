package org.facekd.demo

import android.Manifest
import android.content.Intent
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.ImageDecoder
import android.graphics.Matrix
import android.net.Uri
import android.os.Build
import android.os.Bundle
import android.widget.Button
import android.widget.EditText
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.TextView
import android.widget.Toast
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AlertDialog
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import com.google.ai.edge.litert.Accelerator
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import org.facekd.core.GalleryFileException
import org.facekd.core.GalleryStore

/**
 * Live camera identification with enrolment. All model work runs on one worker thread
 * ([worker]); the UI thread only shows results.
 */
class MainActivity : AppCompatActivity() {
    private val worker: ExecutorService = Executors.newSingleThreadExecutor()

    private lateinit var previewView: PreviewView
    private lateinit var overlay: OverlayView
    private lateinit var status: TextView
    private lateinit var acceleratorButton: Button

    // Owned by the worker thread; read on the UI thread only through the @Volatile fields.
    private var bundle: ModelBundle? = null
    private var store: GalleryStore? = null

    @Volatile private var pipeline: RecognitionPipeline? = null

    @Volatile private var lastFace: FaceResult? = null

    @Volatile private var useFrontCamera = true

    private val requestCamera = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else status.text = getString(R.string.camera_denied)
    }

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) identifyPhoto(uri)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        previewView = findViewById(R.id.preview)
        overlay = findViewById(R.id.overlay)
        status = findViewById(R.id.status)
        acceleratorButton = findViewById(R.id.accelerator)

        findViewById<Button>(R.id.enrol).setOnClickListener { enrolCurrentFace() }
        findViewById<Button>(R.id.pick).setOnClickListener {
            pickPhoto.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly))
        }
        findViewById<Button>(R.id.people).setOnClickListener { showPeople() }
        findViewById<Button>(R.id.info).setOnClickListener { showModelInfo() }
        acceleratorButton.setOnClickListener { switchAccelerator() }

        status.text = getString(R.string.loading_model)
        worker.execute { loadModel() }
    }

    override fun onDestroy() {
        super.onDestroy()
        worker.execute { pipeline?.close() }
        worker.shutdown()
    }

    // ---- model and gallery (worker thread) -------------------------------------------------

    private fun loadModel() {
        val loaded = try {
            ModelBundle.load(this)
        } catch (e: Exception) {
            runOnUiThread { status.text = getString(R.string.model_error, e.message) }
            return
        }
        bundle = loaded
        store = GalleryStore(filesDir.toPath().resolve(GALLERY_FILE))
        openPipeline(preferredAccelerator())
    }

    /** (Re)creates the engine and pipeline; asks the user what to do with an unusable gallery. */
    private fun openPipeline(accelerator: Accelerator) {
        val model = bundle ?: return
        val galleryStore = store ?: return
        val gallery = try {
            galleryStore.load(model.verifiedSha256, model.manifest.embeddingSize())
        } catch (e: GalleryFileException) {
            runOnUiThread { offerToMoveGalleryAside(e, accelerator) }
            return
        }
        pipeline?.close()
        pipeline = RecognitionPipeline(model, LiteRtEngine.create(this, model.modelAsset, accelerator), gallery, galleryStore)
        runOnUiThread { onPipelineReady() }
    }

    private fun offerToMoveGalleryAside(error: GalleryFileException, accelerator: Accelerator) {
        AlertDialog.Builder(this)
            .setTitle(R.string.gallery_unusable)
            .setMessage(error.message)
            .setCancelable(false)
            .setPositiveButton(R.string.move_aside) { _, _ ->
                worker.execute {
                    val kept = store?.moveAside()
                    runOnUiThread { toast(getString(R.string.gallery_moved, kept.toString())) }
                    openPipeline(accelerator)
                }
            }
            .setNegativeButton(R.string.quit) { _, _ -> finish() }
            .show()
    }

    private fun onPipelineReady() {
        val current = pipeline ?: return
        acceleratorButton.text = current.accelerator
        showStatus(current)
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            requestCamera.launch(Manifest.permission.CAMERA)
        }
    }

    /** GPU fallback, old-manifest warning and the matching policy with the gallery's current threshold. */
    private fun showStatus(current: RecognitionPipeline) {
        status.text = listOfNotNull(
            current.fallbackReason?.let { getString(R.string.gpu_fallback, it) },
            current.policyWarning,
            current.policyDescription,
        ).joinToString("\n")
    }

    private fun preferredAccelerator(): Accelerator =
        if (getPreferences(MODE_PRIVATE).getBoolean(PREF_GPU, false)) Accelerator.GPU else Accelerator.CPU

    private fun switchAccelerator() {
        val useGpu = pipeline?.accelerator != Accelerator.GPU.name
        getPreferences(MODE_PRIVATE).edit().putBoolean(PREF_GPU, useGpu).apply()
        worker.execute { openPipeline(if (useGpu) Accelerator.GPU else Accelerator.CPU) }
    }

    // ---- camera -----------------------------------------------------------------------------

    private fun startCamera() {
        val providerFuture = ProcessCameraProvider.getInstance(this)
        providerFuture.addListener({
            val provider = providerFuture.get()
            val selector = if (useFrontCamera && provider.hasCamera(CameraSelector.DEFAULT_FRONT_CAMERA)) {
                CameraSelector.DEFAULT_FRONT_CAMERA
            } else {
                useFrontCamera = false
                CameraSelector.DEFAULT_BACK_CAMERA
            }
            val preview = Preview.Builder().build().also { it.setSurfaceProvider(previewView.surfaceProvider) }
            val analysis = ImageAnalysis.Builder()
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .build()
            analysis.setAnalyzer(worker) { image -> analyze(image) }
            provider.unbindAll()
            provider.bindToLifecycle(this, selector, preview, analysis)
        }, ContextCompat.getMainExecutor(this))
    }

    /** Worker thread: one frame through the pipeline, result to the overlay. */
    private fun analyze(image: ImageProxy) {
        try {
            val current = pipeline ?: return
            val upright = image.toBitmap().rotated(image.imageInfo.rotationDegrees)
            val face = current.processFrame(upright)
            lastFace = face
            val stats = current.latency.snapshot()
            runOnUiThread {
                overlay.show(face, upright.width, upright.height, useFrontCamera, stats, current.accelerator)
            }
        } catch (e: Exception) {
            runOnUiThread { status.text = getString(R.string.frame_error, e.message) }
        } finally {
            image.close()
        }
    }

    // ---- enrolment, photos, people ----------------------------------------------------------

    private fun enrolCurrentFace() {
        val face = lastFace
        if (face == null) {
            toast(getString(R.string.no_face))
            return
        }
        askNameAndEnrol(face)
    }

    private fun askNameAndEnrol(face: FaceResult) {
        val match = face.recognition.match()
        val input = EditText(this).apply {
            hint = getString(R.string.name_hint)
            setText(if (match.isKnown) match.label() else "")
        }
        AlertDialog.Builder(this)
            .setTitle(R.string.enrol_title)
            .setView(input)
            .setPositiveButton(R.string.enrol) { _, _ ->
                val name = input.text.toString()
                worker.execute {
                    val message = try {
                        val current = pipeline ?: return@execute
                        current.enrol(name, face.recognition.embedding())
                        getString(R.string.enrolled, name.trim(), current.gallery.templateCount(name.trim()))
                    } catch (e: Exception) {
                        getString(R.string.enrol_failed, e.message)
                    }
                    runOnUiThread {
                        toast(message)
                        pipeline?.let { showStatus(it) } // the 1:N threshold tightens as the gallery grows
                    }
                }
            }
            .setNegativeButton(android.R.string.cancel, null)
            .show()
    }

    private fun identifyPhoto(uri: Uri) {
        worker.execute {
            val current = pipeline ?: return@execute
            try {
                val face = current.processPhoto(decode(uri))
                runOnUiThread { showPhotoResult(face) }
            } catch (e: Exception) {
                runOnUiThread { toast(getString(R.string.photo_failed, e.message)) }
            }
        }
    }

    private fun showPhotoResult(face: FaceResult) {
        val crop = Bitmap.createBitmap(face.crop, face.cropSize, face.cropSize, Bitmap.Config.ARGB_8888)
        val size = (face.cropSize * 2 * resources.displayMetrics.density).toInt()
        val content = LinearLayout(this).apply {
            orientation = LinearLayout.VERTICAL
            addView(ImageView(this@MainActivity).apply { setImageBitmap(crop) }, LinearLayout.LayoutParams(size, size))
            addView(TextView(this@MainActivity).apply { text = OverlayView.labelFor(face.recognition.match()) })
        }
        AlertDialog.Builder(this)
            .setTitle(R.string.photo_title)
            .setView(content)
            .setPositiveButton(R.string.enrol) { _, _ -> askNameAndEnrol(face) }
            .setNegativeButton(android.R.string.ok, null)
            .show()
    }

    private fun showPeople() {
        val current = pipeline ?: return
        val names = current.gallery.names()
        if (names.isEmpty()) {
            toast(getString(R.string.no_people))
            return
        }
        val rows = names.map { getString(R.string.person_row, it, current.gallery.templateCount(it)) }.toTypedArray()
        AlertDialog.Builder(this)
            .setTitle(R.string.people_title)
            .setItems(rows) { _, which -> confirmDelete(names[which]) }
            .setNegativeButton(android.R.string.ok, null)
            .show()
    }

    private fun confirmDelete(name: String) {
        AlertDialog.Builder(this)
            .setMessage(getString(R.string.delete_question, name))
            .setPositiveButton(R.string.delete) { _, _ ->
                worker.execute {
                    val message = try {
                        pipeline?.delete(name)
                        getString(R.string.deleted, name)
                    } catch (e: Exception) {
                        getString(R.string.delete_failed, e.message)
                    }
                    runOnUiThread {
                        toast(message)
                        pipeline?.let { showStatus(it) }
                    }
                }
            }
            .setNegativeButton(android.R.string.cancel, null)
            .show()
    }

    private fun showModelInfo() {
        val current = pipeline
        startActivity(
            Intent(this, ModelInfoActivity::class.java)
                .putExtra(ModelInfoActivity.EXTRA_ACCELERATOR, current?.accelerator ?: "-")
                .putExtra(ModelInfoActivity.EXTRA_FALLBACK, current?.fallbackReason)
                .putExtra(ModelInfoActivity.EXTRA_PEOPLE, current?.gallery?.size() ?: 0)
                .putExtra(ModelInfoActivity.EXTRA_TEMPLATES, current?.gallery?.templateCount() ?: 0),
        )
    }

    // ---- helpers ----------------------------------------------------------------------------

    private fun decode(uri: Uri): Bitmap {
        val bitmap = if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) {
            // ImageDecoder applies EXIF rotation; software allocation keeps pixels readable.
            ImageDecoder.decodeBitmap(ImageDecoder.createSource(contentResolver, uri)) { decoder, _, _ ->
                decoder.allocator = ImageDecoder.ALLOCATOR_SOFTWARE
            }
        } else {
            contentResolver.openInputStream(uri).use { BitmapFactory.decodeStream(it) }
                ?: throw IllegalArgumentException(getString(R.string.not_an_image))
        }
        return if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap else bitmap.copy(Bitmap.Config.ARGB_8888, false)
    }

    private fun Bitmap.rotated(degrees: Int): Bitmap {
        if (degrees == 0) return this
        val matrix = Matrix().apply { postRotate(degrees.toFloat()) }
        return Bitmap.createBitmap(this, 0, 0, width, height, matrix, true)
    }

    private fun toast(message: String) = Toast.makeText(this, message, Toast.LENGTH_LONG).show()

    companion object {
        private const val GALLERY_FILE = "gallery.bin"
        private const val PREF_GPU = "use_gpu"
    }
}
