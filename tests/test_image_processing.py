import os

import numpy as np
import PIL.Image
import pytest
import torch

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")

from hf_meddiff.models.meddiff.image_processing_meddiff import (  # noqa: E402
    WINDOW_PRESETS,
    MedDiffImageProcessor,
    dicom_to_array,
    load_medical_image,
    nifti_to_array,
)

DICOM_DIR = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
NIFTI_DIR = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data")
CT_SMALL = os.path.join(DICOM_DIR, "CT_small.dcm")
MR_SMALL = os.path.join(DICOM_DIR, "MR_small.dcm")
CR_MONOCHROME1 = os.path.join(DICOM_DIR, "dicomdirtests", "77654033", "CR1", "6154")
RTDOSE_MULTIFRAME = os.path.join(DICOM_DIR, "rtdose.dcm")
JPEG_LS = os.path.join(DICOM_DIR, "JPEGLSNearLossless_08.dcm")


def _window_by_hand(values, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 linear window, written out for the test."""
    out = np.empty(values.shape, dtype=np.float64)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    out[values <= low] = 0.0
    out[values > high] = 1.0
    inside = (values > low) & (values <= high)
    out[inside] = (values[inside] - (center - 0.5)) / (width - 1) + 0.5
    return out


def test_ct_window_preset_matches_hand_computation():
    ds = pydicom.dcmread(CT_SMALL)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    center, width = WINDOW_PRESETS["lung"]
    arr = dicom_to_array(CT_SMALL, window="lung")
    assert arr.shape == (128, 128) and arr.dtype == np.float32
    np.testing.assert_allclose(arr, _window_by_hand(hu, center, width), atol=1e-6)
    # explicit (centre, width) wins, and the file (no WindowCenter) otherwise falls back to min-max
    np.testing.assert_allclose(dicom_to_array(ds, window=(40, 400)), _window_by_hand(hu, 40, 400), atol=1e-6)
    np.testing.assert_allclose(dicom_to_array(ds), (hu - hu.min()) / (hu.max() - hu.min()), atol=1e-6)


def test_file_window_is_used_by_default():
    ds = pydicom.dcmread(MR_SMALL)
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (600.0, 1600.0)
    expected = _window_by_hand(ds.pixel_array.astype(np.float64), 600.0, 1600.0)
    np.testing.assert_allclose(dicom_to_array(MR_SMALL), expected, atol=1e-6)


def test_monochrome1_is_inverted_after_rescale_and_window():
    ds = pydicom.dcmread(CR_MONOCHROME1)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    values = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = 1.0 - _window_by_hand(values, float(ds.WindowCenter), float(ds.WindowWidth))
    np.testing.assert_allclose(dicom_to_array(CR_MONOCHROME1), expected, atol=1e-6)


def test_multiframe_defaults_to_middle_frame_and_checks_range():
    ds = pydicom.dcmread(RTDOSE_MULTIFRAME)
    assert int(ds.NumberOfFrames) == 15
    middle = dicom_to_array(RTDOSE_MULTIFRAME)
    np.testing.assert_array_equal(middle, dicom_to_array(RTDOSE_MULTIFRAME, frame=7))
    frame = ds.pixel_array[3].astype(np.float64)
    np.testing.assert_allclose(
        dicom_to_array(RTDOSE_MULTIFRAME, frame=3),
        (frame - frame.min()) / (frame.max() - frame.min()),
        atol=1e-6,
    )
    with pytest.raises(IndexError, match="15 frames"):
        dicom_to_array(RTDOSE_MULTIFRAME, frame=15)


def test_dicom_errors_name_the_file_and_the_fix(tmp_path):
    no_pixels = tmp_path / "no_pixels.dcm"
    ds = pydicom.dcmread(CT_SMALL)
    del ds.PixelData
    ds.save_as(no_pixels)
    with pytest.raises(ValueError, match=r"no_pixels\.dcm has no pixel data"):
        dicom_to_array(no_pixels)

    garbage = tmp_path / "garbage.dcm"
    garbage.write_text("this is not DICOM at all\n" * 10)
    with pytest.raises(ValueError, match=r"garbage\.dcm is not a readable DICOM file"):
        dicom_to_array(garbage)

    try:
        _ = pydicom.dcmread(JPEG_LS).pixel_array
    except Exception:
        pass
    else:
        pytest.skip("a JPEG-LS decoder is installed")
    with pytest.raises(RuntimeError, match=r"JPEGLSNearLossless_08\.dcm.*JPEG-LS.*pip install"):
        dicom_to_array(JPEG_LS)


def test_nifti_default_middle_slice_and_explicit_slices():
    path = os.path.join(NIFTI_DIR, "anatomical.nii")
    data = np.asarray(nibabel.load(path).dataobj, dtype=np.float64)
    assert data.shape == (33, 41, 25)

    def expected(s):
        s = np.rot90(s)
        return (s - s.min()) / (s.max() - s.min())

    np.testing.assert_allclose(nifti_to_array(path), expected(data[:, :, 12]), atol=1e-6)
    np.testing.assert_allclose(nifti_to_array(path, slice_index=5, axis=0), expected(data[5]), atol=1e-6)
    with pytest.raises(IndexError, match="slice_index=25"):
        nifti_to_array(path, slice_index=25)


def test_nifti_4d_needs_a_volume():
    path = os.path.join(NIFTI_DIR, "example4d.nii.gz")
    with pytest.raises(ValueError, match=r"\(128, 96, 24, 2\).*volume="):
        nifti_to_array(path)
    data = np.asarray(nibabel.load(path).dataobj, dtype=np.float64)[:, :, 10, 1]
    s = np.rot90(data)
    np.testing.assert_allclose(
        nifti_to_array(path, volume=1, slice_index=10), (s - s.min()) / (s.max() - s.min()), atol=1e-6
    )


def test_16bit_png_keeps_its_depth(tmp_path):
    values = np.linspace(1000, 4000, 32 * 32).reshape(32, 32).astype(np.uint16)
    path = tmp_path / "xray16.png"
    PIL.Image.fromarray(values).save(path)
    assert PIL.Image.open(path).mode.startswith("I")
    image = load_medical_image(path)
    assert image.mode == "L" and image.size == (32, 32)
    expected = np.round((values - 1000.0) / 3000.0 * 255)
    assert np.abs(np.asarray(image).astype(int) - expected).max() <= 1  # 16-bit range kept, not cut to 8 bits
    windowed = load_medical_image(path, window=(2500, 1000))
    assert np.asarray(windowed)[0, 0] == 0 and np.asarray(windowed)[-1, -1] == 255


def test_load_medical_image_inputs():
    assert load_medical_image(CT_SMALL, window="soft_tissue").mode == "L"
    assert load_medical_image(pydicom.dcmread(CT_SMALL)).size == (128, 128)
    assert load_medical_image(nibabel.load(os.path.join(NIFTI_DIR, "anatomical.nii"))).size == (33, 41)
    rgb = load_medical_image(os.path.join(DICOM_DIR, "SC_rgb_rle_2frame.dcm"), frame=1)
    assert rgb.mode == "RGB"
    assert load_medical_image(np.zeros((5, 7, 3), dtype=np.uint8)).mode == "RGB"
    assert load_medical_image(torch.zeros(3, 5, 7)).size == (7, 5)
    assert load_medical_image(PIL.Image.new("RGBA", (4, 4))).mode == "RGB"
    # float arrays in [-1, 1] are mapped with (x + 1) / 2
    assert np.asarray(load_medical_image(np.full((2, 2), -1.0)))[0, 0] == 0


def test_processor_turns_dicom_and_arrays_into_pixel_values():
    processor = MedDiffImageProcessor(size=64)
    batch = processor([CT_SMALL, np.zeros((30, 50, 3), np.uint8), torch.rand(40, 40)], return_tensors="pt")
    pixels = batch["pixel_values"]
    assert pixels.shape == (3, 3, 64, 64) and pixels.dtype == torch.float32
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0
    assert torch.equal(pixels[0, 0], pixels[0, 2])  # grey replicated to three channels
    images = processor.postprocess(pixels)
    assert [im.mode for im in images] == ["L", "L", "L"] and images[0].size == (64, 64)
    # "pad" keeps the whole 30x50 image: the top and bottom rows are black padding
    assert float(pixels[1, :, 0].max()) == -1.0


def test_processor_window_default_and_override():
    windowed = MedDiffImageProcessor(size=128, window="lung")(CT_SMALL)["pixel_values"]
    direct = torch.from_numpy(dicom_to_array(CT_SMALL, window="lung")) * 2 - 1
    torch.testing.assert_close(windowed[0, 0], direct)
    other = MedDiffImageProcessor(size=128, window="lung")(CT_SMALL, window="bone")["pixel_values"]
    assert not torch.equal(windowed, other)


@pytest.mark.parametrize(
    ("bad", "error", "pattern"),
    [
        (np.zeros((2, 3, 32, 32)), ValueError, r"4-D array of shape \(2, 3, 32, 32\).*list of images"),
        (np.zeros((32, 32, 2)), ValueError, r"images\[0\].*2 channels.*grey"),
        (np.zeros(7), ValueError, r"shape \(7,\)"),
        ("/no/such/file.dcm", FileNotFoundError, r"/no/such/file\.dcm"),
        (12345, TypeError, r"unsupported image input of type int"),
    ],
)
def test_bad_inputs_name_the_input_and_the_fix(bad, error, pattern):
    with pytest.raises(error, match=pattern):
        MedDiffImageProcessor(size=32)([bad])


def test_image_processor_save_and_load(tmp_path):
    processor = MedDiffImageProcessor(size=48, window=(40, 400), resize_mode="crop")
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    loaded = MedDiffImageProcessor.from_pretrained(tmp_path)
    assert (loaded.size, loaded.window, loaded.resize_mode) == (48, [40.0, 400.0], "crop")
    image = np.random.default_rng(0).random((60, 80))
    torch.testing.assert_close(processor(image)["pixel_values"], loaded(image)["pixel_values"])


def test_one_images_to_tensor_for_both_value_ranges():
    from hf_meddiff.image_tokenizer import images_to_tensor as tokenizer_images
    from hf_meddiff.models.meddiff.image_processing_meddiff import images_to_tensor

    assert tokenizer_images is images_to_tensor
    images = [PIL.Image.fromarray(np.arange(48 * 40, dtype=np.uint8).reshape(48, 40) % 251) for _ in range(2)]
    signed = images_to_tensor(images, 32)
    unit = images_to_tensor(images, 32, value_range=(0.0, 1.0))
    assert signed.shape == unit.shape == (2, 3, 32, 32)
    assert torch.allclose(signed, unit * 2 - 1, atol=1e-6)
    assert torch.equal(signed, MedDiffImageProcessor(size=32)(images)["pixel_values"])
    kept = images_to_tensor(images, None, value_range=(0.0, 1.0))
    assert kept.shape == (2, 3, 48, 40) and torch.equal(
        kept[0, 0], torch.from_numpy(np.asarray(images[0]) / 255.0).float()
    )
    with pytest.raises(ValueError, match="value_range"):
        images_to_tensor(images, 32, value_range=(0, 255))
