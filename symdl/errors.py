"""The errors symdl raises on purpose."""


class FormulaError(ValueError):
    """A declaration symdl cannot accept: names the formula and the offending term."""

    def __init__(self, formula: str, message: str):
        super().__init__(f"formula {formula!r}: {message}")
        self.formula = formula


class CompileError(RuntimeError):
    """A generated kernel that disagrees with the NumPy reference evaluator on its first use
    (symdl.runtime.selfcheck): names the formula, the tensor, the index and both values."""

    def __init__(self, formula: str, message: str, *, tensor: str = "", index: tuple = (),
                 got: float = float("nan"), want: float = float("nan")):
        super().__init__(f"formula {formula!r}: {message}")
        self.formula, self.tensor, self.index, self.got, self.want = formula, tensor, index, got, want
