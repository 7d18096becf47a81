package ai.minivlm

import java.io.File

/** The graph names of a MiniVLM build, in pipeline order (python_ref/pipeline.py GRAPH_NAMES). */
val GRAPH_NAMES = listOf("tee_stage1", "tee_stage2", "caption_prefix", "caption_step", "vqa", "match")

/** The graph names of an EfficientVLM build (python_ref/efficientvlm/graphs.py GRAPH_NAMES). */
val EFFICIENTVLM_GRAPH_NAMES = listOf("vision", "text_feature", "match", "vqa", "caption_step")

/** Model family -> its graphs, for manifests that list no `graph_order` (builds before it existed are MiniVLM's). */
val FAMILY_GRAPH_NAMES = mapOf("minivlm" to GRAPH_NAMES, "efficientvlm" to EFFICIENTVLM_GRAPH_NAMES)

/** The manifest's model family: "minivlm" when absent (builds before EfficientVLM); BAD_FILE for an unknown one. */
internal fun familyOf(manifest: JsonPath): String {
    val family = manifest.opt("family")?.string ?: "minivlm"
    if (family !in FAMILY_GRAPH_NAMES) {
        throw MiniVlmException(ErrorKind.BAD_FILE, "manifest family is '${family.take(40)}', expected one of ${FAMILY_GRAPH_NAMES.keys}")
    }
    return family
}

/**
 * What the app needs from a build folder beyond the host-step constants (which the native core reads from
 * the same manifest): the target, the graphs' I/O specs and the answer/attribute vocabularies.
 */
data class BuildSpec(
    val target: String,        // "executorch" | "tflite" | "coreml" | "coreai"
    val delegate: String?,
    val precision: String,
    val graphs: Map<String, GraphSpec>,
    val answers: List<String>,
    val attributes: List<String>,
    val weightsFile: String? = null, // an ExecuTorch build's one weights file (.ptd), shared by every graph
    val family: String = "minivlm",  // "minivlm" | "efficientvlm"
    val graphOrder: List<String> = GRAPH_NAMES, // the build's graphs in pipeline order (manifest graph_order)
    val vocabFile: String = "vocab.txt", // the tokenizer's vocabulary (manifest tokenizer.vocab_file)
) {
    fun graph(name: String): GraphSpec =
        graphs[name] ?: throw MiniVlmException(ErrorKind.BAD_FILE, "the manifest has no graph '$name'")

    companion object {
        /** Reads `manifest.json` and its vocabularies file from `dir`. */
        fun load(dir: File): BuildSpec {
            val manifest = readText(File(dir, "manifest.json"))
            val root = JsonPath(Json.parseObject(manifest, "manifest.json"), "manifest")
            val vocabFile = root.opt("vocabularies_file")?.string ?: "vocabularies.json"
            val vocab = JsonPath(Json.parseObject(readText(File(dir, vocabFile)), vocabFile), vocabFile)
            return parse(root, vocab)
        }

        fun parse(manifest: JsonPath, vocabularies: JsonPath): BuildSpec {
            val family = familyOf(manifest)
            val order = manifest.opt("graph_order")?.list?.map { it.string } ?: FAMILY_GRAPH_NAMES.getValue(family)
            val missing = FAMILY_GRAPH_NAMES.getValue(family).filter { it !in order }
            if (missing.isNotEmpty()) {
                throw MiniVlmException(ErrorKind.BAD_FILE, "manifest graph_order $order lacks the $family graphs $missing")
            }
            val graphs = manifest["graphs"]
            val specs = order.associateWith { name ->
                val g = graphs[name]
                GraphSpec(name, g["file"].string, g["inputs"].list.map(::tensorSpec), g["outputs"].list.map(::tensorSpec),
                    g.opt("signature")?.string)
            }
            return BuildSpec(
                target = manifest["target"].string,
                delegate = manifest.opt("delegate")?.string,
                precision = manifest["precision"].string,
                graphs = specs,
                answers = vocabularies["answers"].list.map { it.string },
                // EfficientVLM has no detector, so no attributes.
                attributes = vocabularies.opt("attributes")?.list?.map { it.string } ?: emptyList(),
                weightsFile = manifest.opt("weights_file")?.string,
                family = family,
                graphOrder = order,
                vocabFile = manifest.opt("tokenizer")?.opt("vocab_file")?.string ?: "vocab.txt",
            )
        }

        private fun tensorSpec(t: JsonPath): TensorSpec {
            val dtype = DType.of(t["dtype"].string)
            return TensorSpec(
                name = t["name"].string,
                shape = t["shape"].list.map { it.long.also { d -> if (d < 1) throw MiniVlmException(ErrorKind.BAD_FILE, "bad dimension $d") } }.toLongArray(),
                dtype = dtype,
                batchAxis = t.opt("batch_axis")?.int ?: 0,
                runtimeName = t.opt("runtime_name")?.string ?: t["name"].string,
                runtimeDtype = t.opt("runtime_dtype")?.string?.let(DType::of) ?: dtype,
            )
        }

        internal fun readText(file: File): String = try {
            file.readBytes().let { bytes ->
                val decoder = Charsets.UTF_8.newDecoder() // strict: malformed bytes raise, not U+FFFD
                decoder.decode(java.nio.ByteBuffer.wrap(bytes)).toString()
            }
        } catch (e: java.nio.charset.CharacterCodingException) {
            throw MiniVlmException(ErrorKind.BAD_FILE, "${file.path} is not UTF-8")
        } catch (e: java.io.IOException) {
            throw MiniVlmException(ErrorKind.IO_ERROR, "${file.path} cannot be read: ${e.message}")
        }
    }
}
