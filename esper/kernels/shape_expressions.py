"""Symbolic-shape strings in an archive are handed to `sympy.sympify`, which evaluates them with
Python's `eval`: so each one must be plain sympy arithmetic on shape symbols, nothing more.

The check tokenises the string and admits only sympy's arithmetic and relations, torch's shape
functions, assumptions and symbols such as s31 or u0. No attribute access and no other names:
nothing reaches builtins.
"""

from __future__ import annotations

import io
import re
import tokenize

from esper.kernels.integrity import one_line, refuse

# What Python takes for the end of a line (str.splitlines' set), and NUL: none of these may
# reach a string that is evaluated or pasted into generated source.
LINE_BREAK = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029\x00]")

# What sympy may see: its arithmetic and relations, torch's shape functions, assumptions and
# symbols such as s31 or u0. No attribute access, no other names: nothing reaches builtins.
EXPR_NAMES = frozenset(
    [
        "Symbol",
        "Integer",
        "Rational",
        "Float",
        "Add",
        "Mul",
        "Pow",
        "Mod",
        "Max",
        "Min",
        "Abs",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "And",
        "Or",
        "Not",
        "StrictLessThan",
        "StrictGreaterThan",
        "LessThan",
        "GreaterThan",
        "Equality",
        "Unequality",
        "floor",
        "ceiling",
        "oo",
        "zoo",
        "nan",
        "int_oo",
        "IntInfinity",
        "NegativeIntInfinity",
        "Infinity",
        "NegativeInfinity",
        "true",
        "false",
        "True",
        "False",
        "None",
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "LShift",
        "RShift",
        "PowByNatural",
        "FloatPow",
        "FloatTrueDiv",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
        "positive",
        "negative",
        "nonnegative",
        "nonpositive",
        "integer",
        "real",
        "finite",
        "infinite",
        "zero",
        "nonzero",
        "even",
        "odd",
        "rational",
        "commutative",
        "extended_real",
    ]
)
SYMBOL = re.compile(r"[a-z]{1,4}\d+")
QUOTED_SYMBOL = re.compile(r"""(['"])[a-z]{1,4}\d+\1""")
EXPR_OPS = frozenset(
    [
        "(",
        ")",
        ",",
        "=",
        "+",
        "-",
        "*",
        "/",
        "**",
        "//",
        "%",
        "<",
        ">",
        "<=",
        ">=",
        "==",
        "!=",
        "&",
        "|",
        "~",
    ]
)


def check_expression(text: object, where: str) -> None:
    """Only arithmetic on symbols: sympy.sympify evaluates this string with Python's eval."""
    if not isinstance(text, str) or len(text) > 4096 or LINE_BREAK.search(text):
        raise refuse(f"{where}: shape expression {str(text)[:80]!r} is not plain arithmetic")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise refuse(f"{where}: shape expression {text[:80]!r} ({one_line(exc)})") from None
    for token in tokens:
        kind, value = token.type, token.string
        allowed = (
            (kind == tokenize.NAME and (value in EXPR_NAMES or SYMBOL.fullmatch(value)))
            or kind in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)
            or (kind == tokenize.OP and value in EXPR_OPS)
            or (kind == tokenize.STRING and QUOTED_SYMBOL.fullmatch(value))
        )
        if not allowed:
            raise refuse(
                f"{where}: shape expression {text[:80]!r} uses {value!r}, which is not "
                "sympy arithmetic"
            )
