// Choosing a runtime from the manifest's target, and getting pixels out of a CGImage.

import CMiniVLM
import Foundation
#if canImport(CoreGraphics)
import CoreGraphics
#endif

public enum Backends {
    /// The runner factory for a build's `target` ("coreml" or "executorch"); an ExecuTorch build's graphs read
    /// their constants from its `weightsFile`.
    public static func backend(for target: String, weightsFile: String? = nil) throws -> GraphBackend {
        switch target {
        case "coreml":
            #if canImport(CoreML)
            guard #available(iOS 18.0, macOS 15.0, *) else {
                throw MiniVLMError(.config, "a Core ML build is one multifunction model, which needs iOS 18 or macOS 15; use an ExecuTorch build on this system")
            }
            return { folder, name, spec in try CoreMLRunner(folder: folder, name: name, spec: spec) }
            #else
            throw MiniVLMError(.config, "Core ML is not available on this platform")
            #endif
        case "executorch":
            #if canImport(ExecuTorch)
            return { folder, name, spec in try ExecuTorchRunner(folder: folder, name: name, spec: spec, weightsFile: weightsFile) }
            #else
            throw MiniVLMError(.config, "this build of MiniVLM was linked without ExecuTorch")
            #endif
        default:
            throw MiniVLMError(.config, "a '\(target)' build does not run on iOS; convert with --target coreml or executorch")
        }
    }

    /// Opens a build folder (e.g. the app bundle's "minivlm" folder) with the runtime its manifest names.
    public static func open(folder: URL) throws -> Pipeline {
        let build = try BuildSpec(folder: folder)
        return try Pipeline(folder: folder, backend: try backend(for: build.target, weightsFile: build.weightsFile))
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
