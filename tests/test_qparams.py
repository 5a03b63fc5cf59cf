"""Quantization parameters and the arithmetic of requantize."""

import numpy as np
import pytest

from qcompile.quantize import qparams


def test_requantize_rounds_half_up_and_saturates():
    acc = np.array([-3, -1, 1, 3, 1000, -1000])
    # 0.5 × acc: -1.5 → -1, -0.5 → 0, 0.5 → 1, 1.5 → 2 (half up); then +zero point 10 and saturation to uint8
    assert qparams.requantize(acc, 0.5, 10, 0, 255).tolist() == [9, 10, 11, 12, 255, 0]


def test_uint8_activation_params_cover_the_range_and_hold_zero_exactly():
    p = qparams.activation_params(-1.0, 3.0, "uint8")
    assert p.dtype == "uint8" and np.isclose(p.scale, 4.0 / 255)
    assert p.dequantize(p.quantize(np.float32([0.0])))[0] == 0.0
    assert p.quantize(np.float32([-1.0, 3.0])).tolist() == [0, 255]


def test_int8_activation_params_are_symmetric():
    p = qparams.activation_params(-0.5, 2.0, "int8")
    assert int(p.zero_point) == 0 and np.isclose(p.scale, 2.0 / 127)


def test_all_zero_tensor_gets_a_usable_scale():
    p = qparams.activation_params(0.0, 0.0, "uint8")
    assert p.scale > 0 and p.quantize(np.zeros(3, np.float32)).tolist() == [0, 0, 0]


@pytest.mark.parametrize("per_channel", [True, False])
def test_weights_are_symmetric_int8_with_max_magnitude_at_127(per_channel):
    w = np.random.default_rng(1).standard_normal((8, 4, 3, 3)).astype(np.float32)
    p = qparams.weight_params(w, 0, per_channel)
    q = qparams.quantize_weight(w, p)
    assert q.dtype == np.int8 and np.abs(q).max() == 127 and int(np.abs(p.zero_point).max()) == 0
    if per_channel:
        assert np.all(np.abs(q).reshape(8, -1).max(axis=1) == 127)
    np.testing.assert_allclose(p.dequantize(q), w, atol=float(np.max(p.scale)) / 2 + 1e-7)


def test_near_dead_channel_scale_is_floored():
    w = np.ones((2, 3), np.float32)
    w[1] = 1e-13
    p = qparams.weight_params(w, 0, True)
    assert p.scale[1] == pytest.approx(p.scale[0] / qparams.CHANNEL_SCALE_FLOOR)
