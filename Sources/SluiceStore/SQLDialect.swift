/// The SQL dialects the store's migrations are written for: one set of numbered files
/// (`Sources/SluiceStore/Migrations`), written in SQLite's dialect, and translated here, the one
/// place that knows how the two differ.
///
/// What differs:
/// - column types: SQLite's `INTEGER` (64-bit), `REAL` and `BLOB` are PostgreSQL's `BIGINT`,
///   `DOUBLE PRECISION` and `BYTEA`;
/// - SQLite's `WITHOUT ROWID` tables are plain tables on PostgreSQL;
/// - a line `--@postgres STATEMENT` is a statement on PostgreSQL only (a comment on SQLite), and
///   `--@sqlite STATEMENT` one on SQLite only.
public enum SQLDialect: String, Sendable, CaseIterable {
    case sqlite
    case postgres

    /// `sql` (written for SQLite, with `--@` lines) as this dialect runs it.
    public func translate(_ sql: String) -> String {
        var lines: [Substring] = []
        for line in sql.split(separator: "\n", omittingEmptySubsequences: false) {
            if let statement = Self.statement(line, marker: "--@postgres ") {
                if self == .postgres { lines.append(statement) }
            } else if let statement = Self.statement(line, marker: "--@sqlite ") {
                if self == .sqlite { lines.append(statement) }
            } else if line.hasPrefix("--") || self == .sqlite {
                lines.append(line)
            } else {
                lines.append(Substring(Self.postgresTypes(String(line))))
            }
        }
        return lines.joined(separator: "\n")
    }

    static func statement(_ line: Substring, marker: String) -> Substring? {
        guard line.hasPrefix(marker) else { return nil }
        return line.dropFirst(marker.count)
    }

    /// The column types and table options of one line of SQLite DDL, in PostgreSQL's words.
    /// Whole upper-case words only: the migrations write SQL keywords in upper case.
    static func postgresTypes(_ line: String) -> String {
        var words: [String] = []
        var word = ""
        var out = ""
        func flush() {
            guard !word.isEmpty else { return }
            words.append(word)
            switch word {
            case "INTEGER": out += "BIGINT"
            case "REAL": out += "DOUBLE PRECISION"
            case "BLOB": out += "BYTEA"
            default: out += word
            }
            word = ""
        }
        for character in line {
            if character.isLetter || character.isNumber || character == "_" {
                word.append(character)
            } else {
                flush()
                out.append(character)
            }
        }
        flush()
        return out.replacingOccurrences(of: " WITHOUT ROWID", with: "")
    }
}

extension StoreMigrations.Migration {
    /// This migration's SQL in `dialect`.
    public func sql(for dialect: SQLDialect) -> String { dialect.translate(sql) }
}
