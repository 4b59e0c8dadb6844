"""The errors symdl raises on purpose."""


class FormulaError(ValueError):
    """A declaration symdl cannot accept: names the formula and the offending term."""

    def __init__(self, formula: str, message: str):
        super().__init__(f"formula {formula!r}: {message}")
        self.formula = formula
