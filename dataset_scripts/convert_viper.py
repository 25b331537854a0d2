"""Convert VIPeR (cam_a / cam_b, one image per person and camera) to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_viper.py /data/VIPeR --out viper_hf
    python dataset_scripts/convert_viper.py /data/VIPeR --out viper_pq --format parquet
    python dataset_scripts/convert_viper.py /data/VIPeR --push-to-hub ORG/viper

data_dir holds cam_a/ and cam_b/ (000_45.bmp ...). By default query and gallery are the pools of the
10 random splits (cam_a / cam_b) and train is every image; --split-id T keeps split T only.
Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("viper", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("viper", description=__doc__))
