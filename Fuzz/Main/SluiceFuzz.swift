import Foundation
import Logging
import SluiceFuzzTargets

#if FUZZING
/// libFuzzer's entry: the target is named by SLUICE_FUZZ_TARGET (scripts/fuzz.sh sets it).
/// A property that fails is a crash, which libFuzzer keeps as an input to reproduce it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    if let failure = FuzzRun.target.run(bytes) { fatalError("\(FuzzRun.target.rawValue): \(failure)") }
    return 0
}

enum FuzzRun {
    static let target: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["SLUICE_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTarget(rawValue: name) else {
            fatalError("set SLUICE_FUZZ_TARGET to one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        // Alerts and refusals are logged by the daemon's code; a fuzzer has no one to read them.
        LoggingSystem.bootstrap { _ in SwiftLogNoOpLogHandler() }
        return target
    }()
}
#else
/// Without libFuzzer: `sluice-fuzz TARGET FILE|DIR...` runs inputs through a target (to
/// reproduce a crash in a debugger or a plain build), `sluice-fuzz seed DIR` writes the seed
/// corpora.
@main
enum SluiceFuzz {
    static func main() throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        LoggingSystem.bootstrap { _ in SwiftLogNoOpLogHandler() }
        if arguments.first == "seed", arguments.count == 2 {
            let written = try SeedCorpus.write(to: arguments[1])
            FileHandle.standardError.write(Data("\(written) seed inputs written under \(arguments[1])\n".utf8))
            return
        }
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name), arguments.count >= 2 else {
            FileHandle.standardError.write(Data("""
            usage: sluice-fuzz TARGET FILE|DIR...   run inputs through a target
                   sluice-fuzz seed DIR             write the seed corpora (DIR/TARGET/...)
            targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))

            """.utf8))
            exit(2)
        }
        var failures = 0, inputs = 0
        for path in try SeedCorpus.files(arguments.dropFirst()) {
            inputs += 1
            let bytes = [UInt8](FileManager.default.contents(atPath: path) ?? Data())
            if let failure = target.run(bytes) {
                failures += 1
                FileHandle.standardError.write(Data("\(path): \(failure)\n".utf8))
            }
        }
        FileHandle.standardError.write(Data("\(inputs) inputs, \(failures) failures\n".utf8))
        exit(failures == 0 ? 0 : 1)
    }
}
#endif
