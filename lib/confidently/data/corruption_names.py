"""The names and severities of the built-in corruptions, free of torch and OpenCV, so help texts can list
them; :mod:`confidently.data.corruptions` registers an implementation for each."""

SEVERITIES = (1, 2, 3, 4, 5)
# imagecorruptions.get_corruption_names("all"), written out so that listing names imports no OpenCV/numba.
IMAGENET_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
              "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
              "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate")
