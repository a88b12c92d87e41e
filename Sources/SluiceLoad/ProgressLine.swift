import Foundation

/// A progress line for a long command on a terminal: what is done, the share of the whole and
/// the time left, rewritten in place at most four times a second, and erased at the end. It
/// writes nothing when its output is not a terminal (a pipe, a file, CI's log), or when `TERM`
/// is `dumb`, so scripts read only the command's own output.
public final class ProgressLine {
    let label: String
    let write: (String) -> Void
    let now: () -> Double
    let interval: Double
    let started: Double
    var lastDrawn = -Double.infinity
    var drawn = false
    public let enabled: Bool

    /// - Parameters:
    ///   - label: what is under way (`replaying trace.csv.gz`).
    ///   - enabled: whether to draw (default: standard error is a terminal that is not dumb).
    ///   - write: where the line goes (default: standard error).
    ///   - now: seconds on a monotonic clock (tests give their own).
    public init(_ label: String, enabled: Bool = ProgressLine.terminal, interval: Double = 0.25,
                write: @escaping (String) -> Void = { FileHandle.standardError.write(Data($0.utf8)) },
                now: @escaping () -> Double = { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }) {
        self.label = label
        self.enabled = enabled
        self.interval = interval
        self.write = write
        self.now = now
        started = now()
    }

    /// Whether standard error is a terminal worth drawing on.
    public static var terminal: Bool {
        isatty(STDERR_FILENO) != 0 && ProcessInfo.processInfo.environment["TERM"] != "dumb"
    }

    /// Redraws the line if the last drawing is old enough: `done` of `total` (nil when the
    /// whole is not known: no share and no time left), and `detail` (counts worth seeing).
    public func update(done: Double, total: Double?, detail: String) {
        guard enabled else { return }
        let at = now()
        guard at - lastDrawn >= interval else { return }
        lastDrawn = at
        drawn = true
        write("\r\u{1B}[K" + Self.line(label: label, done: done, total: total, elapsed: at - started, detail: detail))
    }

    /// Erases the line, so what the command prints next starts on a clean line.
    public func finish() {
        guard enabled, drawn else { return }
        write("\r\u{1B}[K")
        drawn = false
    }

    /// `replaying t.csv.gz  42%  1.2M rows, 31 alerts  12 s left`.
    static func line(label: String, done: Double, total: Double?, elapsed: Double, detail: String) -> String {
        var parts = [label]
        if let total, total > 0 {
            let share = min(1, max(0, done / total))
            parts.append(String(format: "%3.0f%%", (share * 100).rounded(.down)))
            parts.append(detail)
            // An estimate once there is something to go on: a second in, and 1 % done.
            if share >= 0.01, elapsed >= 1, share < 1 {
                parts.append(duration(elapsed * (1 - share) / share) + " left")
            } else {
                parts.append(duration(elapsed))
            }
        } else {
            parts.append(detail)
            parts.append(duration(elapsed))
        }
        return parts.filter { !$0.isEmpty }.joined(separator: "  ")
    }

    /// `7 s`, `3 min 05 s`, `2 h 04 min`.
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        let whole = Int(min(seconds.rounded(), 1e9))
        if whole < 60 { return "\(whole) s" }
        if whole < 3_600 { return String(format: "%d min %02d s", whole / 60, whole % 60) }
        return String(format: "%d h %02d min", whole / 3_600, whole % 3_600 / 60)
    }

    /// `950`, `12.3k`, `4.5M`: a count short enough for the line.
    public static func count(_ value: Int) -> String {
        switch value {
        case ..<10_000: return "\(value)"
        case ..<1_000_000: return String(format: "%.1fk", Double(value) / 1e3)
        default: return String(format: "%.1fM", Double(value) / 1e6)
        }
    }
}
