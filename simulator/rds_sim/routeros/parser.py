"""Schema-driven parser for RouterOS command lines.

The whole line is parsed before anything runs (a syntax error anywhere means nothing runs), the
way RouterOS compiles a script. Names are resolved against the menu tree, so errors carry the
column of the offending word: `bad command name foo (line 1 column 7)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ParseError
from .expressions import And, Cond, Expr, Not, Or
from .schema import CommandSpec, Menu
from .tokens import Kind, Token, tokenize

_VALUE_KINDS = {
    Kind.WORD,
    Kind.STRING,
    Kind.EQ,
    Kind.NE,
    Kind.NOT,
    Kind.TILDE,
    Kind.LT,
    Kind.GT,
    Kind.LE,
    Kind.GE,
    Kind.LBRACKET,
    Kind.VAR,
}
_COMPARE = {Kind.EQ, Kind.NE, Kind.TILDE, Kind.LT, Kind.GT, Kind.LE, Kind.GE}


@dataclass
class Substitution:
    """`[find ...]` (or `[/disk find ...]`): evaluated when the command runs."""

    command: ParsedCommand


@dataclass
class Value:
    text: str  # unquoted text; the source text for a substitution
    line: int
    col: int
    sub: Substitution | None = None


@dataclass
class ParsedCommand:
    menu: Menu
    spec: CommandSpec
    text: str  # source text of this command
    values: dict[str, Value] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    where: Expr | None = None
    where_text: str = ""

    def value(self, name: str) -> str | None:
        v = self.values.get(name)
        return None if v is None else v.text


class _Parser:
    def __init__(self, src: str, root: Menu, prefixes: bool) -> None:
        self.src = src
        self.prefixes = prefixes
        self.root = root
        self.toks = tokenize(src)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def peek(self, n: int = 1) -> Token:
        return self.toks[min(self.i + n, len(self.toks) - 1)]

    def advance(self) -> Token:
        t = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return t

    @staticmethod
    def syntax(t: Token) -> ParseError:
        return ParseError("syntax error", t.line, t.col)

    @staticmethod
    def end_expected(t: Token) -> ParseError:
        return ParseError("expected end of command", t.line, t.col)

    def at_end(self, in_brackets: bool) -> bool:
        k = self.tok.kind
        return k in (Kind.SEP, Kind.EOF) or (in_brackets and k == Kind.RBRACKET)

    # --- script and command -------------------------------------------------------------

    def script(self) -> list[ParsedCommand]:
        context = self.root
        commands: list[ParsedCommand] = []
        while self.tok.kind != Kind.EOF:
            if self.tok.kind == Kind.SEP:
                self.advance()
                continue
            start = self.tok.start
            menu, spec = self.path(context)
            if spec is None:  # a bare path changes the menu for the following commands
                if not self.at_end(False):
                    raise self.syntax(self.tok)
                context = menu
                continue
            commands.append(self.command(menu, spec, in_brackets=False, start=start))
        return commands

    def path(self, context: Menu) -> tuple[Menu, CommandSpec | None]:
        """Menu path words (`/disk print`, `/disk/print`, `/system resource print`)."""
        t = self.tok
        if t.kind != Kind.WORD:
            raise self.syntax(t)
        node = context
        first = True
        while True:
            t = self.tok
            word = t.text
            if not first and (
                t.kind != Kind.WORD
                or word.startswith("/")
                or (self.peek().kind == Kind.EQ and not self.peek().spaced)
            ):
                return node, None
            offset = 0
            if word.startswith("/"):
                node, offset = self.root, 1
            parts = word[offset:].split("/")
            for n, part in enumerate(parts):
                col = t.col + offset
                offset += len(part) + 1
                if part == "":
                    if (n == len(parts) - 1 and n > 0) or len(parts) == 1:
                        continue  # `/disk/` or a lone `/`
                    raise ParseError("syntax error", t.line, col)
                if part == "..":
                    node = node.parent or node
                    continue
                child = node.child(part, self.prefixes)
                if child is None:
                    raise ParseError(f"bad command name {part}", t.line, col)
                if isinstance(child, Menu):
                    node = child
                    continue
                if n != len(parts) - 1:
                    raise ParseError("expected end of command", t.line, col + len(part))
                self.advance()
                return node, child
            self.advance()
            first = False

    def command(
        self, menu: Menu, spec: CommandSpec, in_brackets: bool, start: int
    ) -> ParsedCommand:
        cmd = ParsedCommand(menu, spec, "")
        positional = [a for a in spec.args if a.positional]
        if spec.expression:
            if self.tok.kind == Kind.WORD and self.tok.text == "where":
                self.advance()
            if not self.at_end(in_brackets):
                cmd.where = self.expression(menu, in_brackets)
        while not self.at_end(in_brackets):
            t = self.tok
            nxt = self.peek()
            if t.kind == Kind.WORD and nxt.kind == Kind.EQ and not nxt.spaced:
                arg = spec.arg(t.text, self.prefixes)
                if arg is None or arg.kind == "flag":
                    raise self.end_expected(t)
                self.advance()
                self.advance()
                cmd.values[arg.name] = self.value(menu, allow_spaced=False)
                positional = [a for a in positional if a.name != arg.name]
                continue
            if t.kind == Kind.WORD and t.text == "where" and spec.where:
                self.advance()
                where_start = self.tok.start
                if self.at_end(in_brackets):
                    raise self.syntax(self.tok)
                cmd.where = self.expression(menu, in_brackets)
                cmd.where_text = self.src[where_start : self.tok.start].strip()
                continue
            if t.kind == Kind.WORD:
                arg = spec.arg(t.text, self.prefixes) if not positional else None
                exact = next((a for a in spec.args if a.name == t.text), None)
                flag = exact if exact is not None and exact.kind == "flag" else arg
                if flag is not None and flag.kind == "flag":
                    cmd.flags.add(flag.name)
                    self.advance()
                    continue
            if positional and t.kind in (Kind.WORD, Kind.STRING, Kind.LBRACKET):
                cmd.values[positional.pop(0).name] = self.value(menu, allow_spaced=True)
                continue
            if t.kind in (Kind.WORD, Kind.STRING):
                raise self.end_expected(t)
            raise self.syntax(t)
        cmd.text = self.src[start : self.tok.start].strip()
        return cmd

    # --- values --------------------------------------------------------------------------

    def value(self, menu: Menu, allow_spaced: bool) -> Value:
        """Adjacent pieces glued into one value; `[...]` is a substitution."""
        t = self.tok
        if t.kind not in _VALUE_KINDS or (t.spaced and not allow_spaced):
            return Value("", t.line, t.col)  # `comment=` followed by a space: empty value
        pieces: list[str] = []
        sub: Substitution | None = None
        start = t.start
        first = True
        while self.tok.kind in _VALUE_KINDS and (first or not self.tok.spaced):
            cur = self.tok
            if cur.kind == Kind.VAR:
                raise self.syntax(cur)  # no variables are defined on this device
            if cur.kind == Kind.LBRACKET:
                if not first:
                    raise self.syntax(cur)
                self.advance()
                inner_start = self.tok.start
                menu_, spec = self.path(menu)
                if spec is None:
                    raise self.syntax(self.tok)
                sub = Substitution(self.command(menu_, spec, True, inner_start))
                if self.tok.kind != Kind.RBRACKET:
                    raise self.syntax(self.tok)
                self.advance()
                if self.tok.kind in _VALUE_KINDS and not self.tok.spaced:
                    raise self.syntax(self.tok)
                break
            pieces.append(cur.text)
            self.advance()
            first = False
        if sub is not None:
            return Value(self.src[start : self.toks[self.i - 1].end], t.line, t.col, sub)
        return Value("".join(pieces), t.line, t.col)

    # --- expressions ---------------------------------------------------------------------

    def expression(self, menu: Menu, in_brackets: bool) -> Expr:
        left = self.conjunction(menu, in_brackets)
        while self.tok.kind == Kind.WORD and self.tok.text == "or":
            self.advance()
            left = Or(left, self.conjunction(menu, in_brackets))
        return left

    def conjunction(self, menu: Menu, in_brackets: bool) -> Expr:
        left = self.unary(menu, in_brackets)
        while True:
            t = self.tok
            if t.kind == Kind.WORD and t.text == "and":
                self.advance()
            elif not (
                t.kind in (Kind.NOT, Kind.LPAREN) or (t.kind == Kind.WORD and t.text != "or")
            ):
                return left
            left = And(left, self.unary(menu, in_brackets))

    def unary(self, menu: Menu, in_brackets: bool) -> Expr:
        t = self.tok
        if t.kind == Kind.NOT:
            self.advance()
            return Not(self.unary(menu, in_brackets))
        if t.kind == Kind.LPAREN:
            self.advance()
            inner = self.expression(menu, in_brackets)
            if self.tok.kind != Kind.RPAREN:
                raise self.syntax(self.tok)
            self.advance()
            return inner
        if t.kind != Kind.WORD:
            raise self.syntax(t)
        if t.text != ".id" and t.text not in menu.properties:
            raise self.end_expected(t)
        self.advance()
        if self.tok.kind not in _COMPARE:
            return Cond(t.text, None)
        op = self.advance().text
        v = self.value(menu, allow_spaced=True)
        if v.sub is not None:
            raise ParseError("syntax error", v.line, v.col)
        return Cond(t.text, op, v.text)


def parse(src: str, root: Menu, prefixes: bool = True) -> list[ParsedCommand]:
    """Parse a whole command line; raises ParseError with RouterOS's message and column.

    `prefixes` accepts unique abbreviations of commands and arguments, as RouterOS does.
    """
    return _Parser(src, root, prefixes).script()
