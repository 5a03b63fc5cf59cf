"""Running a pass pipeline with the instrumentation `--debug` asks for: each pass's time, and the IR after each pass
dumped to a folder (TVM's own `PassTimingInstrument` and `DumpIR`)."""

from __future__ import annotations

from .progress import Reporter


def apply(pipeline, mod, reporter: Reporter):
    """`pipeline(mod)`, timed pass by pass when `reporter.debug`, dumped when `reporter.dump_ir` names a folder."""
    if not reporter.debug and reporter.dump_ir is None:
        return pipeline(mod)
    import tvm
    from tvm.ir.instrument import DumpIR, PassTimingInstrument

    name = pipeline.info.name
    timing = PassTimingInstrument()
    instruments = [timing]
    if reporter.dump_ir is not None:
        instruments.append(DumpIR(reporter.dump_ir / name))
    current = tvm.transform.PassContext.current()
    with tvm.transform.PassContext(opt_level=current.opt_level, config=dict(current.config),
                                   instruments=instruments):
        mod = pipeline(mod)
        profile = timing.render()
    if reporter.debug:
        reporter.note(f"pass timings of {name}:\n{profile}")
    return mod
