"""Tables behind the demo data: lab panels, imaging kinds and Chinese names.

Codes are real LOINC / SNOMED CT / DICOM codes so the demo exercises the same mapping
paths as production traffic. Units follow each LOINC code's property: the mass
concentration codes (2160-0 creatinine, 2093-3 cholesterol...) carry mass units
(mg/dL); sending µmol/L under them would silently contradict the code.
"""

from __future__ import annotations

from dataclasses import dataclass

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


@dataclass(frozen=True)
class Analyte:
    """One Observation kind. `female` overrides the range where it differs by sex."""

    loinc: str
    display: str
    zh: str
    unit: str = ""
    ucum: str = ""
    low: float = 0.0
    high: float = 0.0
    decimals: int = 1
    female: tuple[float, float] | None = None
    local_code: str | None = None  # H002's own LIS code (see LOCAL_CODE_HOSPITAL)
    qualitative: bool = False  # value is positive/negative, not a quantity


@dataclass(frozen=True)
class LabPanel:
    key: str
    loinc: str
    display: str
    zh: str
    note: str
    analytes: tuple[Analyte, ...]
    weight: int


@dataclass(frozen=True)
class ImagingKind:
    key: str
    note: str
    zh: str  # procedure text; enhanced studies say 增强, plain ones 平扫
    modality: str  # "DX" means DX, or CR at hospitals that still run CR plates
    body_code: str
    body_display: str
    loinc: str
    loinc_display: str
    conclusions: tuple[str, ...]
    series: tuple[int, int]  # min/max series per study
    instances: tuple[int, int]  # min/max instances per series
    weight: int
    contrast: bool = False
    lateral: bool = False  # needs a laterality (knee)


LOCAL_CODE_HOSPITAL = "H002"


def _single(key: str, analyte: Analyte, note: str, weight: int) -> LabPanel:
    # A single test is still sent as a DiagnosticReport coded like its only Observation.
    return LabPanel(key, analyte.loinc, analyte.display, analyte.zh, note, (analyte,), weight)


# Tables stay one entry per line group: easier to review against LOINC than one field a line.
# fmt: off
_HB = Analyte("718-7", "Hemoglobin [Mass/volume] in Blood", "血红蛋白", "g/L", "g/L",
              130, 175, 0, (115, 150), "HGB")
_WBC = Analyte("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "白细胞计数",
               "10^9/L", "10*9/L", 3.5, 9.5, 2, None, "WBC")
_PLT = Analyte("777-3", "Platelets [#/volume] in Blood by Automated count", "血小板计数",
               "10^9/L", "10*9/L", 125, 350, 0, None, "PLT")
_RBC = Analyte("789-8", "Erythrocytes [#/volume] in Blood by Automated count", "红细胞计数",
               "10^12/L", "10*12/L", 4.3, 5.8, 2, (3.8, 5.1), "RBC")


LAB_PANELS: tuple[LabPanel, ...] = (
    LabPanel("cbc", "58410-2", "CBC panel - Blood by Automated count", "血常规", "CBC panel",
             (_HB, _WBC, _PLT, _RBC), 24),
    LabPanel("liver", "24325-3", "Hepatic function 2000 panel - Serum or Plasma", "肝功能",
             "liver panel", (
                 Analyte("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in "
                         "Serum or Plasma", "丙氨酸氨基转移酶", "U/L", "U/L", 9, 50, 0),
                 Analyte("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in "
                         "Serum or Plasma", "天门冬氨酸氨基转移酶", "U/L", "U/L", 15, 40, 0),
                 Analyte("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma",
                         "总胆红素", "mg/dL", "mg/dL", 0.3, 1.2, 2),
                 Analyte("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "白蛋白",
                         "g/L", "g/L", 40, 55, 1),
             ), 12),
    LabPanel("renal", "24362-6", "Renal function 2000 panel - Serum or Plasma", "肾功能",
             "renal panel", (
                 Analyte("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "肌酐",
                         "mg/dL", "mg/dL", 0.6, 1.2, 2),
                 Analyte("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "尿素氮",
                         "mg/dL", "mg/dL", 7, 20, 1),
                 Analyte("3084-1", "Urate [Mass/volume] in Serum or Plasma", "尿酸",
                         "mg/dL", "mg/dL", 3.5, 7.2, 1),
             ), 10),
    LabPanel("lipid", "57698-3", "Lipid panel with direct LDL - Serum or Plasma", "血脂",
             "lipid panel", (
                 Analyte("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "总胆固醇",
                         "mg/dL", "mg/dL", 120, 200, 0),
                 Analyte("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "甘油三酯",
                         "mg/dL", "mg/dL", 40, 150, 0),
                 Analyte("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
                         "高密度脂蛋白胆固醇", "mg/dL", "mg/dL", 40, 80, 0),
                 Analyte("13457-7", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by "
                         "calculation", "低密度脂蛋白胆固醇", "mg/dL", "mg/dL", 50, 130, 0),
             ), 10),
    _single("glucose", Analyte("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "血糖",
                               "mg/dL", "mg/dL", 70, 99, 0, None, "GLU"), "glucose", 8),
    _single("hba1c", Analyte("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood",
                             "糖化血红蛋白", "%", "%", 4.0, 6.0, 1), "HbA1c", 5),
    _single("tsh", Analyte("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma",
                           "促甲状腺激素", "mIU/L", "m[IU]/L", 0.27, 4.2, 2), "TSH", 4),
    LabPanel("electrolytes", "24326-1", "Electrolytes 1998 panel - Serum or Plasma", "电解质",
             "electrolytes panel", (
                 Analyte("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "钠",
                         "mmol/L", "mmol/L", 137, 147, 1),
                 Analyte("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "钾",
                         "mmol/L", "mmol/L", 3.5, 5.3, 2),
                 Analyte("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "氯",
                         "mmol/L", "mmol/L", 99, 110, 1),
             ), 6),
    # LOINC's PT panel holds PT and INR; Chinese 凝血功能 orders add APTT to it.
    LabPanel("coag", "34528-0", "PT panel - Platelet poor plasma by Coagulation assay",
             "凝血功能", "coagulation panel", (
                 Analyte("5902-2", "Prothrombin time (PT)", "凝血酶原时间", "s", "s",
                         10.0, 14.0, 1),
                 Analyte("34714-6", "INR in Blood by Coagulation assay", "国际标准化比值",
                         "INR", "{INR}", 0.8, 1.2, 2),
                 Analyte("14979-9", "aPTT in Platelet poor plasma by Coagulation assay",
                         "活化部分凝血活酶时间", "s", "s", 25, 37, 1),
             ), 6),
    _single("hbsag", Analyte("5196-1", "Hepatitis B virus surface Ag [Presence] in Serum by "
                             "Immunoassay", "乙肝表面抗原", qualitative=True), "HBsAg", 5),
    _single("cea", Analyte("2039-6", "Carcinoembryonic Ag [Mass/volume] in Serum or Plasma",
                           "癌胚抗原", "ng/mL", "ng/mL", 0, 5, 2), "CEA", 3),
    _single("afp", Analyte("1834-1", "Alpha-1-Fetoprotein [Mass/volume] in Serum or Plasma",
                           "甲胎蛋白", "ng/mL", "ng/mL", 0, 7, 2), "AFP", 3),
)

# fmt: on

_HEAD = ("69536005", "Head")
_THORAX = ("51185008", "Thorax")

# fmt: off
IMAGING_KINDS: tuple[ImagingKind, ...] = (
    ImagingKind("ct-head", "CT head plain", "头颅CT平扫", "CT", *_HEAD,
                "30799-1", "CT Head WO contrast",
                ("颅内未见明显异常。", "左侧基底节区腔隙性梗死灶。"), (2, 3), (30, 60), 5),
    ImagingKind("ct-chest", "CT chest plain", "胸部CT平扫", "CT", *_THORAX,
                "29252-4", "CT Chest WO contrast",
                ("双肺未见明显实质性病变。", "右肺上叶微小结节，建议随访。"), (2, 4), (60, 300), 6),
    ImagingKind("ct-chest-enhanced", "CT chest enhanced", "胸部CT增强", "CT", *_THORAX,
                "24628-0", "CT Chest W contrast IV",
                ("纵隔未见肿大淋巴结，增强后未见异常强化。",), (3, 5), (60, 300), 3,
                contrast=True),
    ImagingKind("dr-chest", "DR chest", "胸部DR正侧位", "DX", *_THORAX,
                "36643-5", "XR Chest 2 Views",
                ("心肺膈未见明显异常。", "双肺纹理增多。"), (1, 2), (1, 1), 8),
    ImagingKind("mr-brain", "MRI brain", "头颅MRI平扫", "MR", "12738006", "Brain",
                "30657-1", "MR Brain WO contrast",
                ("脑实质未见明显异常信号。", "双侧额叶少许缺血灶。"), (4, 7), (20, 40), 3),
    ImagingKind("mr-knee", "MRI knee", "膝关节MRI平扫", "MR", "72696002", "Knee",
                "30691-0", "MR Knee WO contrast",
                ("内侧半月板后角II度变性。", "膝关节少量积液。"), (4, 6), (18, 30), 4,
                lateral=True),
    ImagingKind("us-abdomen", "US abdomen", "全腹部超声", "US", "818983003", "Abdomen",
                "24558-9", "US Abdomen",
                ("肝胆胰脾未见明显异常。", "脂肪肝（轻度）。"), (1, 1), (8, 20), 6),
)

# fmt: on

LATERALITY = {"left": ("7771000", "Left", "左"), "right": ("24028007", "Right", "右")}

FAMILY_NAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹"
GIVEN_CHARS = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华建国志红玉梅文斌宇浩欣怡子涵"
