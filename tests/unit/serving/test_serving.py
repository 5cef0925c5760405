"""Request limits of the served model, refused before anything is decoded."""

import pytest


def test_requests_over_the_limits_are_refused_whole():
    import base64

    from skin_cancer.serving.rest import RequestRejected, predict_encoded

    with pytest.raises(RequestRejected, match="at most 2 images, this one 3"):
        predict_encoded(None, ["a", "b", "c"], max_batch=2, max_bytes=100)
    small, large, just_over = (base64.b64encode(bytes(n)).decode() for n in (99, 120, 101))
    with pytest.raises(RequestRejected, match="row 1: about 120 bytes of image, over the limit of 100"):
        predict_encoded(None, [small, large, large], max_batch=8, max_bytes=100)  # refused before anything is decoded
    # Measured exactly once decoded: 101 bytes pass the length estimate (102) for a limit of 100, not the count.
    with pytest.raises(RequestRejected, match="row 0: 101 bytes of image, over the limit of 100 bytes"):
        predict_encoded(None, [just_over], max_batch=8, max_bytes=100)
