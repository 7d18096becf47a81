// Choosing a runtime from the manifest's target, and getting pixels out of a CGImage.

import CMiniVLM
import Foundation
#if canImport(CoreGraphics)
import CoreGraphics
#endif

public enum Backends {
    /// The runner factory for a build's `target`: "coreml", "coreai" and "executorch" builds run on iOS, a "tflite"
    /// build is refused. An ExecuTorch build's graphs read their constants from its `weightsFile`; `computeUnits` is
    /// a Core ML or Core AI build's `compute_units`.
    public static func backend(for target: String, weightsFile: String? = nil, computeUnits: String? = nil) throws -> GraphBackend {
        switch target {
        case "coreml":
            #if canImport(CoreML)
            guard #available(iOS 18.0, macOS 15.0, *) else {
                throw MiniVLMError(.config, "a Core ML build is one multifunction model, which needs iOS 18 or macOS 15; use an ExecuTorch build on this system")
            }
            let units = try CoreMLRunner.computeUnits(computeUnits)
            return { folder, name, spec in try CoreMLRunner(folder: folder, name: name, spec: spec, computeUnits: units) }
            #else
            throw MiniVLMError(.config, "Core ML is not available on this platform")
            #endif
        case "coreai":
            #if canImport(CoreAI)
            guard #available(iOS 27.0, macOS 27.0, *) else {
                throw MiniVLMError(.config, "a Core AI build needs iOS 27 or macOS 27; use a Core ML or ExecuTorch build on this system")
            }
            let models = try CoreAIModels(computeUnits: computeUnits)  // one load of model.aimodel for every graph
            return { folder, name, spec in try CoreAIRunner(models: models, folder: folder, name: name, spec: spec) }
            #else
            throw MiniVLMError(.config, "this build of MiniVLM was compiled without Core AI (it needs the iOS 27 / macOS 27 SDK); use a Core ML or ExecuTorch build")
            #endif
        case "executorch":
            #if canImport(ExecuTorch)
            return { folder, name, spec in try ExecuTorchRunner(folder: folder, name: name, spec: spec, weightsFile: weightsFile) }
            #else
            throw MiniVLMError(.config, "this build of MiniVLM was linked without ExecuTorch")
            #endif
        case "tflite":
            throw MiniVLMError(.config, "a tflite build runs on Android, not iOS; convert with --target coreml, coreai or executorch")
        default:
            throw MiniVLMError(.config, "unknown build target '\(target)'; iOS runs coreml, coreai and executorch builds")
        }
    }

    /// Opens a build folder (e.g. the app bundle's "minivlm" folder) with the runtime its manifest names.
    public static func open(folder: URL) throws -> Pipeline {
        let build = try BuildSpec(folder: folder)
        return try Pipeline(folder: folder, backend: try backend(for: build.target, weightsFile: build.weightsFile,
                                                                  computeUnits: build.computeUnits))
    }
}

#if canImport(CoreGraphics)
extension PixelImage {
    /// Draws `image` into an RGBA8 buffer (sRGB, alpha ignored by the core), upright as given.
    public init(cgImage image: CGImage) throws {
        let width = image.width, height = image.height
        guard width > 0, height > 0 else { throw MiniVLMError(.badInput, "image is \(width)x\(height)") }
        var data = Data(count: width * height * 4)
        let drawn = data.withUnsafeMutableBytes { (raw: UnsafeMutableRawBufferPointer) -> Bool in
            guard let context = CGContext(
                data: raw.baseAddress, width: width, height: height, bitsPerComponent: 8, bytesPerRow: width * 4,
                space: CGColorSpace(name: CGColorSpace.sRGB)!, bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue
            ) else { return false }
            context.draw(image, in: CGRect(x: 0, y: 0, width: width, height: height))
            return true
        }
        guard drawn else { throw MiniVLMError(.badInput, "cannot draw a \(width)x\(height) image into RGBA8") }
        self.init(pixels: data, width: width, height: height, rowBytes: width * 4, format: Int32(MVLM_PIXELS_RGBA8))
    }
}
#endif
