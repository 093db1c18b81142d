"""Notebook runs print one training bar and a final line: no per-step dicts, no library chatter."""
import types

from transformers.trainer_callback import (
    CallbackHandler, DefaultFlowCallback, PrinterCallback, ProgressCallback, TrainerCallback, TrainerControl,
    TrainerState,
)
from transformers.utils.notebook import NotebookProgressCallback

from hybrid_utils.callbacks import TrainingProgressCallback, use_single_progress_bar
from hybrid_utils.notebook import quiet_libraries


class _Trainer:
    """The two methods of ``transformers.Trainer`` that ``use_single_progress_bar`` calls."""

    def __init__(self, callbacks):
        self.callback_handler = CallbackHandler(callbacks, None, None, None, None)

    def add_callback(self, callback):
        self.callback_handler.add_callback(callback)

    def remove_callback(self, callback):
        self.callback_handler.remove_callback(callback)


def test_printing_callbacks_are_replaced_by_one_bar():
    keep = TrainerCallback()
    trainer = _Trainer([DefaultFlowCallback, PrinterCallback, NotebookProgressCallback, keep])
    use_single_progress_bar(trainer, description="training hybrid")
    kinds = [type(c) for c in trainer.callback_handler.callbacks]
    assert kinds == [DefaultFlowCallback, TrainerCallback, TrainingProgressCallback]
    trainer = _Trainer([DefaultFlowCallback, ProgressCallback])
    use_single_progress_bar(trainer, show_progress=False)
    assert [type(c) for c in trainer.callback_handler.callbacks] == [DefaultFlowCallback]


def test_the_bar_counts_steps_and_shows_the_loss_without_printing_logs(capsys):
    callback = TrainingProgressCallback("training hybrid")
    state, control = TrainerState(max_steps=3), TrainerControl()
    args = types.SimpleNamespace()
    callback.on_train_begin(args, state, control)
    bar = callback.bar
    for step in (1, 2, 3):
        state.global_step = step
        callback.on_step_end(args, state, control)
        callback.on_log(args, state, control, logs={"loss": 0.5 / step, "grad_norm": 1.0, "learning_rate": 1e-4})
    assert bar.n == 3 and bar.postfix == "loss=0.1667"
    callback.on_train_end(args, state, control)
    assert callback.bar is None
    captured = capsys.readouterr()
    assert "grad_norm" not in captured.out + captured.err
    assert "training hybrid" in captured.err and "3/3" in captured.err


def test_quiet_libraries_silences_transformers_and_datasets():
    import datasets
    import transformers

    transformers.logging.set_verbosity_warning()
    transformers.logging.enable_progress_bar()
    datasets.enable_progress_bars()
    try:
        quiet_libraries()
        assert transformers.logging.get_verbosity() == transformers.logging.ERROR
        assert not transformers.logging.is_progress_bar_enabled()
        assert datasets.is_progress_bar_enabled() is False
    finally:
        transformers.logging.set_verbosity_warning()
        transformers.logging.enable_progress_bar()
        datasets.enable_progress_bars()
