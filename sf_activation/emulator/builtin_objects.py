"""The emulator's built-in standard objects, as full describe-format dicts.

Each object is a compact table of field specs below; `builtin_describes()` expands them
into what `GET /services/data/vXX.X/sobjects/{Object}/describe` returns on a real org.
Names, types, lengths and flags follow the describes recorded from real orgs
(`/work/shared/data/real-org/`); `sf_activation_tests/test_emulator_builtin_objects.py`
checks that they agree.

Emulator-only addition: Account, Contact, Lead and Opportunity carry a custom text field
`External_Id__c` (length 255, External ID, unique, idLookup) so demos and tests can
upsert out of the box. A real org does not have it: an admin must create that field
(or the model must name another External ID field) before upserting there.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

DEFAULT_API_VERSION = "62.0"

# One flag letter per boolean property, so a field fits on one line of the tables below.
_FLAG_LETTERS = {
    "n": "nillable",
    "c": "createable",
    "u": "updateable",
    "d": "defaultedOnCreate",
    "i": "idLookup",
    "x": "externalId",
    "q": "unique",
    "a": "autoNumber",
    "k": "calculated",
    "N": "nameField",
    "r": "restrictedPicklist",
    "s": "caseSensitive",
}

_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "long": "xsd:long",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "time": "xsd:time",
    "base64": "xsd:base64Binary",
    "address": "urn:address",
    "location": "urn:location",
    "anyType": "xsd:anyType",
}
_TEXT_TYPES = {
    "string",
    "textarea",
    "email",
    "phone",
    "url",
    "picklist",
    "multipicklist",
    "combobox",
    "encryptedstring",
}


@dataclass(frozen=True)
class _Field:
    name: str
    label: str
    type: str
    flags: str = ""
    length: int = 0
    ref: tuple[str, ...] = ()
    rel: str | None = None
    child: str | None = None  # the parent's childRelationships name for this lookup
    cascade: bool = False  # childRelationships' cascadeDelete (deleting the parent deletes this)
    picklist: tuple[str, ...] = ()
    default: Any = None
    precision: int = 0
    scale: int = 0
    digits: int = 0
    extra_type: str | None = None
    compound: str | None = None


@dataclass(frozen=True)
class _Object:
    name: str
    label: str
    label_plural: str
    key_prefix: str
    fields: tuple[_Field, ...]
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _f(name: str, label: str, type_: str, flags: str = "", length: int = 0, **kw: Any) -> _Field:
    for key in ("ref", "picklist"):
        if key in kw and isinstance(kw[key], str):
            kw[key] = (kw[key],)
        elif key in kw:
            kw[key] = tuple(kw[key])
    return _Field(name, label, type_, flags, length, **kw)


def _id(label: str) -> _Field:
    return _f("Id", label, "id", "di", 18)


def _ref(
    name: str, label: str, flags: str, ref: str | tuple[str, ...], rel: str | None, **kw: Any
) -> _Field:
    return _f(name, label, "reference", flags, 18, ref=ref, rel=rel, **kw)


def _audit(deleted: bool = True) -> list[_Field]:
    """The system audit fields: never createable or updateable by clients."""
    fields = [_f("IsDeleted", "Deleted", "boolean", "d", default=False)] if deleted else []
    return fields + [
        _f("CreatedDate", "Created Date", "datetime", "d"),
        _ref("CreatedById", "Created By ID", "d", "User", "CreatedBy"),
        _f("LastModifiedDate", "Last Modified Date", "datetime", "d"),
        _ref("LastModifiedById", "Last Modified By ID", "d", "User", "LastModifiedBy"),
        _f("SystemModstamp", "System Modstamp", "datetime", "d"),
    ]


def _owner(ref: str | tuple[str, ...] = "User") -> _Field:
    return _ref("OwnerId", "Owner ID", "cud", ref, "Owner")


def _external_id() -> _Field:
    return _f("External_Id__c", "External ID", "string", "ncuixq", 255)


_GEOCODE_ACCURACY = (
    "Address", "NearAddress", "Block", "Street", "ExtendedZip", "Zip", "Neighborhood",
    "City", "County", "State", "Unknown",
)  # fmt: skip
_CLEAN_STATUS = (
    "Matched", "Different", "Acknowledged", "NotFound", "Inactive", "Pending",
    "SelectMatch", "Skipped",
)  # fmt: skip


def _viewed() -> list[_Field]:
    """LastViewedDate / LastReferencedDate: set by SOQL `FOR VIEW` / `FOR REFERENCE`."""
    return [
        _f("LastViewedDate", "Last Viewed Date", "datetime", "n"),
        _f("LastReferencedDate", "Last Referenced Date", "datetime", "n"),
    ]


def _address(prefix: str, label: str) -> list[_Field]:
    """Street/City/State/PostalCode/Country + lat/long + compound, as on Account and Contact."""
    compound = f"{prefix}Address"
    sep = " " if label else ""
    return [
        _f(
            f"{prefix}Street",
            f"{label}{sep}Street",
            "textarea",
            "ncu",
            255,
            extra_type="plaintextarea",
            compound=compound,
        ),
        _f(f"{prefix}City", f"{label}{sep}City", "string", "ncu", 40, compound=compound),
        _f(f"{prefix}State", f"{label}{sep}State/Province", "string", "ncu", 80, compound=compound),
        _f(
            f"{prefix}PostalCode",
            f"{label}{sep}Zip/Postal Code",
            "string",
            "ncu",
            20,
            compound=compound,
        ),
        _f(f"{prefix}Country", f"{label}{sep}Country", "string", "ncu", 80, compound=compound),
        _f(
            f"{prefix}Latitude",
            f"{label}{sep}Latitude",
            "double",
            "ncu",
            precision=18,
            scale=15,
            compound=compound,
        ),
        _f(
            f"{prefix}Longitude",
            f"{label}{sep}Longitude",
            "double",
            "ncu",
            precision=18,
            scale=15,
            compound=compound,
        ),
        _f(
            f"{prefix}GeocodeAccuracy",
            f"{label}{sep}Geocode Accuracy",
            "picklist",
            "ncur",
            40,
            picklist=_GEOCODE_ACCURACY,
            compound=compound,
        ),
        _f(compound, f"{label}{sep}Address", "address", "n"),
    ]


_INDUSTRIES = (
    "Agriculture", "Apparel", "Banking", "Biotechnology", "Chemicals", "Communications",
    "Construction", "Consulting", "Education", "Electronics", "Energy", "Engineering",
    "Entertainment", "Environmental", "Finance", "Food & Beverage", "Government",
    "Healthcare", "Hospitality", "Insurance", "Machinery", "Manufacturing", "Media",
    "Not For Profit", "Recreation", "Retail", "Shipping", "Technology",
    "Telecommunications", "Transportation", "Utilities", "Other",
)  # fmt: skip
_LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
_SALUTATIONS = ("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.")
_RATINGS = ("Hot", "Warm", "Cold")
_STAGES = (
    "Prospecting", "Qualification", "Needs Analysis", "Value Proposition",
    "Id. Decision Makers", "Perception Analysis", "Proposal/Price Quote",
    "Negotiation/Review", "Closed Won", "Closed Lost",
)  # fmt: skip
_DESCRIPTION = {"extra_type": "plaintextarea"}

_ACCOUNT = _Object(
    "Account",
    "Account",
    "Accounts",
    "001",
    (
        _id("Account ID"),
        *_audit()[:1],
        _ref("MasterRecordId", "Master Record ID", "n", "Account", "MasterRecord"),
        _f(
            "Name",
            "Account Name",
            "string",
            "cuN",
            255,
            extra_type="switchablepersonname",
            compound="Name",
        ),
        _f(
            "Type",
            "Account Type",
            "picklist",
            "ncu",
            40,
            picklist=(
                "Prospect",
                "Customer - Direct",
                "Customer - Channel",
                "Channel Partner / Reseller",
                "Installation Partner",
                "Technology Partner",
                "Other",
            ),
        ),  # fmt: skip
        _ref("ParentId", "Parent Account ID", "ncu", "Account", "Parent", child="ChildAccounts"),
        *_address("Billing", "Billing"),
        *_address("Shipping", "Shipping"),
        _f("Phone", "Account Phone", "phone", "ncu", 40),
        _f("Fax", "Account Fax", "phone", "ncu", 40),
        _f("AccountNumber", "Account Number", "string", "ncu", 40),
        _f("Website", "Website", "url", "ncu", 255),
        _f("PhotoUrl", "Photo URL", "url", "n", 255, extra_type="imageurl"),
        _f("Sic", "SIC Code", "string", "ncu", 20),
        _f("Industry", "Industry", "picklist", "ncu", 40, picklist=_INDUSTRIES),
        _f("AnnualRevenue", "Annual Revenue", "currency", "ncu", precision=18),
        _f("NumberOfEmployees", "Employees", "int", "ncu", digits=8),
        _f(
            "Ownership",
            "Ownership",
            "picklist",
            "ncu",
            40,
            picklist=("Public", "Private", "Subsidiary", "Other"),
        ),
        _f("TickerSymbol", "Ticker Symbol", "string", "ncu", 20),
        _f("Description", "Account Description", "textarea", "ncu", 32000, **_DESCRIPTION),
        _f("Rating", "Account Rating", "picklist", "ncu", 40, picklist=_RATINGS),
        _f("Site", "Account Site", "string", "ncu", 80),
        _owner(),
        *_audit()[1:],
        _f("LastActivityDate", "Last Activity", "date", "n"),
        *_viewed(),
        _f("IsPartner", "Partner Account", "boolean", "ud", default=False),
        _f("IsCustomerPortal", "Customer Portal Account", "boolean", "ud", default=False),
        _f("ChannelProgramName", "Channel Program Name", "string", "n", 255),
        _f("ChannelProgramLevelName", "Channel Program Level Name", "string", "n", 255),
        _f("Jigsaw", "Data.com Key", "string", "ncu", 20),
        _f("JigsawCompanyId", "Jigsaw Company ID", "string", "n", 20, rel="JigsawCompany"),
        _f("CleanStatus", "Clean Status", "picklist", "ncur", 40, picklist=_CLEAN_STATUS),
        _f("AccountSource", "Account Source", "picklist", "ncu", 40, picklist=_LEAD_SOURCES),
        _f("DunsNumber", "D-U-N-S Number", "string", "ncu", 9),
        _f("Tradestyle", "Tradestyle", "string", "ncu", 255),
        _f("NaicsCode", "NAICS Code", "string", "ncu", 8),
        _f("NaicsDesc", "NAICS Description", "string", "ncu", 120),
        _f("YearStarted", "Year Started", "string", "ncu", 4),
        _f("SicDesc", "SIC Description", "string", "ncu", 80),
        _ref("DandbCompanyId", "D&B Company ID", "ncu", "DandBCompany", "DandbCompany"),
        _ref("OperatingHoursId", "Operating Hour ID", "ncu", "OperatingHours", "OperatingHours"),
        _external_id(),
    ),
)

_CONTACT = _Object(
    "Contact",
    "Contact",
    "Contacts",
    "003",
    (
        _id("Contact ID"),
        *_audit()[:1],
        _ref("MasterRecordId", "Master Record ID", "n", "Contact", "MasterRecord"),
        _ref(
            "AccountId", "Account ID", "ncu", "Account", "Account", child="Contacts", cascade=True
        ),
        _f("LastName", "Last Name", "string", "cu", 80, compound="Name"),
        _f("FirstName", "First Name", "string", "ncu", 40, compound="Name"),
        _f(
            "Salutation",
            "Salutation",
            "picklist",
            "ncu",
            40,
            picklist=_SALUTATIONS,
            compound="Name",
        ),
        _f("Name", "Full Name", "string", "N", 121, extra_type="personname"),
        *_address("Mailing", "Mailing"),
        *_address("Other", "Other"),
        _f("Phone", "Business Phone", "phone", "ncu", 40),
        _f("Fax", "Business Fax", "phone", "ncu", 40),
        _f("MobilePhone", "Mobile Phone", "phone", "ncu", 40),
        _f("HomePhone", "Home Phone", "phone", "ncu", 40),
        _f("OtherPhone", "Other Phone", "phone", "ncu", 40),
        _f("AssistantPhone", "Asst. Phone", "phone", "ncu", 40),
        _ref("ReportsToId", "Reports To ID", "ncu", "Contact", "ReportsTo"),
        _f("Email", "Email", "email", "ncui", 80),
        _f("Title", "Title", "string", "ncu", 128),
        _f("Department", "Department", "string", "ncu", 80),
        _f("AssistantName", "Assistant's Name", "string", "ncu", 40),
        _f("LeadSource", "Lead Source", "picklist", "ncu", 255, picklist=_LEAD_SOURCES),
        _f("Birthdate", "Birthdate", "date", "ncu"),
        _f("Description", "Contact Description", "textarea", "ncu", 32000, **_DESCRIPTION),
        _f("HasOptedOutOfEmail", "Email Opt Out", "boolean", "cud", default=False),
        _f("DoNotCall", "Do Not Call", "boolean", "cud", default=False),
        _owner(),
        *_audit()[1:],
        _f("LastActivityDate", "Last Activity", "date", "n"),
        _f("LastCURequestDate", "Last Stay-in-Touch Request Date", "datetime", "n"),
        _f("LastCUUpdateDate", "Last Stay-in-Touch Save Date", "datetime", "n"),
        *_viewed(),
        _f("EmailBouncedReason", "Email Bounced Reason", "string", "ncu", 255),
        _f("EmailBouncedDate", "Email Bounced Date", "datetime", "ncu"),
        _f("IsEmailBounced", "Is Email Bounced", "boolean", "d", default=False),
        _f("PhotoUrl", "Photo URL", "url", "n", 255, extra_type="imageurl"),
        _f("Jigsaw", "Data.com Key", "string", "ncu", 20),
        _f("JigsawContactId", "Jigsaw Contact ID", "string", "n", 20, rel="JigsawContact"),
        _f("CleanStatus", "Clean Status", "picklist", "ncur", 40, picklist=_CLEAN_STATUS),
        _ref("IndividualId", "Individual ID", "ncu", "Individual", "Individual"),
        _external_id(),
    ),
)

_LEAD = _Object(
    "Lead",
    "Lead",
    "Leads",
    "00Q",
    (
        _id("Lead ID"),
        *_audit()[:1],
        _ref("MasterRecordId", "Master Record ID", "n", "Lead", "MasterRecord"),
        _f("LastName", "Last Name", "string", "cu", 80, compound="Name"),
        _f("FirstName", "First Name", "string", "ncu", 40, compound="Name"),
        _f(
            "Salutation",
            "Salutation",
            "picklist",
            "ncu",
            40,
            picklist=(*_SALUTATIONS, "Mx."),
            compound="Name",
        ),
        _f("Name", "Full Name", "string", "N", 121, extra_type="personname"),
        _f("Title", "Title", "string", "ncu", 128),
        _f("Company", "Company", "string", "cu", 255),
        *_address("", ""),
        _f("Phone", "Phone", "phone", "ncu", 40),
        _f("MobilePhone", "Mobile Phone", "phone", "ncu", 40),
        _f("Fax", "Fax", "phone", "ncu", 40),
        _f("Email", "Email", "email", "ncui", 80),
        _f("Website", "Website", "url", "ncu", 255),
        _f("PhotoUrl", "Photo URL", "url", "n", 255, extra_type="imageurl"),
        _f("Description", "Description", "textarea", "ncu", 32000, **_DESCRIPTION),
        _f("LeadSource", "Lead Source", "picklist", "ncu", 255, picklist=_LEAD_SOURCES),
        _f(
            "Status",
            "Status",
            "picklist",
            "cud",
            255,
            default="Open - Not Contacted",
            picklist=(
                "Open - Not Contacted",
                "Working - Contacted",
                "Closed - Converted",
                "Closed - Not Converted",
            ),
        ),  # fmt: skip
        _f("Industry", "Industry", "picklist", "ncu", 255, picklist=_INDUSTRIES),
        _f("Rating", "Rating", "picklist", "ncu", 255, picklist=_RATINGS),
        _f("AnnualRevenue", "Annual Revenue", "currency", "ncu", precision=18),
        _f("NumberOfEmployees", "Employees", "int", "ncu", digits=8),
        _owner(("Group", "User")),
        _f("IsConverted", "Converted", "boolean", "cd", default=False),
        _f("ConvertedDate", "Converted Date", "date", "n"),
        _ref("ConvertedAccountId", "Converted Account ID", "n", "Account", "ConvertedAccount"),
        _ref("ConvertedContactId", "Converted Contact ID", "n", "Contact", "ConvertedContact"),
        _ref(
            "ConvertedOpportunityId",
            "Converted Opportunity ID",
            "n",
            "Opportunity",
            "ConvertedOpportunity",
        ),
        _f("IsUnreadByOwner", "Unread By Owner", "boolean", "cud", default=False),
        *_audit()[1:],
        _f("LastActivityDate", "Last Activity", "date", "n"),
        *_viewed(),
        _f("Jigsaw", "Data.com Key", "string", "ncu", 20),
        _f("JigsawContactId", "Jigsaw Contact ID", "string", "n", 20, rel="JigsawContact"),
        _f("CleanStatus", "Clean Status", "picklist", "ncur", 40, picklist=_CLEAN_STATUS),
        _f("CompanyDunsNumber", "Company D-U-N-S Number", "string", "ncu", 9),
        _ref("DandbCompanyId", "D&B Company ID", "ncu", "DandBCompany", "DandbCompany"),
        _f("EmailBouncedReason", "Email Bounced Reason", "string", "nu", 255),
        _f("EmailBouncedDate", "Email Bounced Date", "datetime", "nu"),
        _ref("IndividualId", "Individual ID", "ncu", "Individual", "Individual"),
        _external_id(),
    ),
)

_OPPORTUNITY = _Object(
    "Opportunity",
    "Opportunity",
    "Opportunities",
    "006",
    (
        _id("Opportunity ID"),
        *_audit()[:1],
        _ref(
            "AccountId",
            "Account ID",
            "ncu",
            "Account",
            "Account",
            child="Opportunities",
            cascade=True,
        ),
        _f("IsPrivate", "Private", "boolean", "cud", default=False),
        _f("Name", "Name", "string", "cuiN", 120),
        _f("Description", "Description", "textarea", "ncu", 32000, **_DESCRIPTION),
        _f("StageName", "Stage", "picklist", "cu", 255, picklist=_STAGES),
        _f("Amount", "Amount", "currency", "ncu", precision=18, scale=2),
        _f("Probability", "Probability (%)", "percent", "ncud", precision=3),
        _f("ExpectedRevenue", "Expected Amount", "currency", "nk", precision=18, scale=2),
        _f("TotalOpportunityQuantity", "Quantity", "double", "ncu", precision=18, scale=2),
        _f("CloseDate", "Close Date", "date", "cu"),
        _f(
            "Type",
            "Opportunity Type",
            "picklist",
            "ncu",
            255,
            picklist=(
                "Existing Customer - Upgrade",
                "Existing Customer - Replacement",
                "Existing Customer - Downgrade",
                "New Customer",
            ),
        ),  # fmt: skip
        _f("NextStep", "Next Step", "string", "ncu", 255),
        _f("LeadSource", "Lead Source", "picklist", "ncu", 255, picklist=_LEAD_SOURCES),
        _f("IsClosed", "Closed", "boolean", "d", default=False),
        _f("IsWon", "Won", "boolean", "d", default=False),
        _f(
            "ForecastCategory",
            "Forecast Category",
            "picklist",
            "r",
            40,
            picklist=("Omitted", "Pipeline", "BestCase", "MostLikely", "Forecast", "Closed"),
        ),
        _f(
            "ForecastCategoryName",
            "Forecast Category",
            "picklist",
            "ncudr",
            255,
            picklist=(
                "Omitted",
                "Pipeline",
                "Best Case",
                "Commit",
                "Closed",
            ),
        ),  # fmt: skip
        _ref("CampaignId", "Campaign ID", "ncu", "Campaign", "Campaign"),
        _f("HasOpportunityLineItem", "Has Line Item", "boolean", "d", default=False),
        _ref("Pricebook2Id", "Price Book ID", "ncud", "Pricebook2", "Pricebook2"),
        _owner(),
        *_audit()[1:],
        _f("LastActivityDate", "Last Activity", "date", "n"),
        _f("LastStageChangeDate", "Last Stage Change Date", "datetime", "n"),
        _f("FiscalQuarter", "Fiscal Quarter", "int", "n", digits=8),
        _f("FiscalYear", "Fiscal Year", "int", "n", digits=8),
        _f("Fiscal", "Fiscal Period", "string", "n", 6),
        _ref("ContactId", "Contact ID", "nc", "Contact", None, child="Opportunities"),
        *_viewed(),
        _f("HasOpenActivity", "Has Open Activity", "boolean", "d", default=False),
        _f("HasOverdueTask", "Has Overdue Task", "boolean", "d", default=False),
        _ref(
            "LastAmountChangedHistoryId",
            "Opportunity History ID",
            "n",
            "OpportunityHistory",
            "LastAmountChangedHistory",
        ),
        _ref(
            "LastCloseDateChangedHistoryId",
            "Opportunity History ID",
            "n",
            "OpportunityHistory",
            "LastCloseDateChangedHistory",
        ),
        _external_id(),
    ),
)

_CASE = _Object(
    "Case",
    "Case",
    "Cases",
    "500",
    (
        _id("Case ID"),
        *_audit()[:1],
        _ref("MasterRecordId", "Master Record ID", "n", "Case", "MasterRecord"),
        _f("CaseNumber", "Case Number", "string", "diaN", 30),
        _ref("ContactId", "Contact ID", "ncu", "Contact", "Contact", child="Cases"),
        _ref("AccountId", "Account ID", "ncu", "Account", "Account", child="Cases"),
        _ref("AssetId", "Asset ID", "ncu", "Asset", "Asset"),
        _ref("ParentId", "Parent Case ID", "ncu", "Case", "Parent", child="Cases"),
        _f("SuppliedName", "Name", "string", "ncu", 80),
        _f("SuppliedEmail", "Email Address", "email", "ncu", 80),
        _f("SuppliedPhone", "Phone", "string", "ncu", 40),
        _f("SuppliedCompany", "Company", "string", "ncu", 80),
        _f(
            "Type",
            "Case Type",
            "picklist",
            "ncu",
            40,
            picklist=(
                "Mechanical",
                "Electrical",
                "Electronic",
                "Structural",
                "Other",
            ),
        ),  # fmt: skip
        _f(
            "Status",
            "Status",
            "picklist",
            "ncud",
            40,
            default="New",
            picklist=("New", "Working", "Escalated", "Closed"),
        ),
        _f(
            "Reason",
            "Case Reason",
            "picklist",
            "ncu",
            40,
            picklist=(
                "Installation",
                "Equipment Complexity",
                "Performance",
                "Breakdown",
                "Equipment Design",
                "Feedback",
                "Other",
            ),
        ),  # fmt: skip
        _f("Origin", "Case Origin", "picklist", "ncu", 40, picklist=("Phone", "Email", "Web")),
        _f("Subject", "Subject", "string", "ncu", 255),
        _f(
            "Priority",
            "Priority",
            "picklist",
            "ncud",
            40,
            default="Medium",
            picklist=("High", "Medium", "Low"),
        ),
        _f("Description", "Description", "textarea", "ncu", 32000, **_DESCRIPTION),
        _f("IsClosed", "Closed", "boolean", "d", default=False),
        _f("ClosedDate", "Closed Date", "datetime", "n"),
        _f("IsEscalated", "Escalated", "boolean", "cud", default=False),
        _owner(("Group", "User")),
        *_audit()[1:],
        _f("ContactPhone", "Contact Phone", "phone", "n", 40),
        _f("ContactMobile", "Contact Mobile", "phone", "n", 40),
        _f("ContactEmail", "Contact Email", "email", "n", 80),
        _f("ContactFax", "Contact Fax", "phone", "n", 40),
        _f("Comments", "Internal Comments", "textarea", "ncu", 4000, extra_type="plaintextarea"),
        *_viewed(),
    ),
)

# Activities (Task, Event). No recorded describe of them: names, types and flags follow
# Salesforce's Object Reference ("Task", "Event"). WhoId points at a person (Contact or
# Lead), WhatId at any other record; both are polymorphic (namePointing). The org derives
# AccountId, IsClosed and the Event time fields (`sf_activation/emulator/activities.py`).
_WHO = ("Contact", "Lead")
_WHAT = (
    "Account", "Asset", "Campaign", "Case", "Contract", "Opportunity", "Order", "Product2",
    "Solution",
)  # fmt: skip
_TASK_STATUSES = ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")
_ACTIVITY_TYPES = ("Call", "Email", "Meeting", "Other")


def _activity_links(plural: str) -> list[_Field]:
    """WhoId and WhatId; `plural` names the child relationship (Account.Tasks, ...)."""
    return [
        _ref("WhoId", "Name ID", "ncu", _WHO, "Who", child=plural, cascade=True),
        _ref("WhatId", "Related To ID", "ncu", _WHAT, "What", child=plural, cascade=True),
    ]


def _activity_tail(object_name: str) -> list[_Field]:
    return [
        _ref("AccountId", "Account ID", "n", "Account", "Account"),
        _f("IsArchived", "Archived", "boolean", "d", default=False),
        _ref("RecurrenceActivityId", "Recurrence Activity ID", "n", object_name, None),
        _f("IsRecurrence", f"Create Recurring Series of {object_name}s", "boolean", "cd"),
        _f("ReminderDateTime", "Reminder Date/Time", "datetime", "ncu"),
        _f("IsReminderSet", "Reminder Set", "boolean", "cud", default=False),
    ]


_TASK = _Object(
    "Task",
    "Task",
    "Tasks",
    "00T",
    (
        _id("Activity ID"),
        *_activity_links("Tasks"),
        _f(
            "Subject",
            "Subject",
            "combobox",
            "ncu",
            255,
            picklist=("Call", "Send Letter", "Send Quote", "Other"),
        ),
        _f("ActivityDate", "Due Date Only", "date", "ncu"),
        _f(
            "Status",
            "Status",
            "picklist",
            "cud",
            40,
            default="Not Started",
            picklist=_TASK_STATUSES,
        ),
        _f(
            "Priority",
            "Priority",
            "picklist",
            "cud",
            40,
            default="Normal",
            picklist=("High", "Normal", "Low"),
        ),
        _f("IsHighPriority", "High Priority", "boolean", "d", default=False),
        _ref("OwnerId", "Assigned To ID", "cud", ("Group", "User"), "Owner"),
        _f("Description", "Description", "textarea", "ncu", 32000, **_DESCRIPTION),
        _f("Type", "Type", "picklist", "ncu", 40, picklist=_ACTIVITY_TYPES),
        *_audit()[:1],
        _f("IsClosed", "Closed", "boolean", "d", default=False),
        *_audit()[1:],
        _f("CallDurationInSeconds", "Call Duration", "int", "ncu", digits=8),
        _f(
            "CallType",
            "Call Type",
            "picklist",
            "ncu",
            40,
            picklist=("Internal", "Inbound", "Outbound"),
        ),
        _f("CallDisposition", "Call Result", "string", "ncu", 255),
        _f("CallObject", "Call Object Identifier", "string", "ncu", 255),
        *_activity_tail("Task"),
        _f("CompletedDateTime", "Completed Date/Time", "datetime", "n"),
        _f(
            "TaskSubtype",
            "Task Subtype",
            "picklist",
            "ncdr",
            40,
            picklist=("Task", "Email", "ListEmail", "Cadence", "Call"),
        ),
    ),
)

_EVENT = _Object(
    "Event",
    "Event",
    "Events",
    "00U",
    (
        _id("Activity ID"),
        *_activity_links("Events"),
        _f(
            "Subject",
            "Subject",
            "combobox",
            "ncu",
            255,
            picklist=("Call", "Email", "Meeting", "Send Letter/Quote", "Other"),
        ),
        _f("Location", "Location", "string", "ncu", 255),
        _f("IsAllDayEvent", "All-Day Event", "boolean", "cud", default=False),
        _f("ActivityDateTime", "Due Date Time", "datetime", "ncu"),
        _f("ActivityDate", "Due Date Only", "date", "ncu"),
        _f("DurationInMinutes", "Duration", "int", "ncu", digits=8),
        _f("StartDateTime", "Start Date Time", "datetime", "ncu"),
        _f("EndDateTime", "End Date Time", "datetime", "ncu"),
        _f("EndDate", "End", "date", "n"),
        _f("Description", "Description", "textarea", "ncu", 32000, **_DESCRIPTION),
        _ref("OwnerId", "Assigned To ID", "cud", ("Calendar", "User"), "Owner"),
        _f("Type", "Type", "picklist", "ncu", 40, picklist=_ACTIVITY_TYPES),
        _f("IsPrivate", "Private", "boolean", "cud", default=False),
        _f(
            "ShowAs",
            "Show Time As",
            "picklist",
            "ncud",
            40,
            default="Busy",
            picklist=("Busy", "OutOfOffice", "Free"),
        ),
        *_audit()[:1],
        _f("IsChild", "Is Child", "boolean", "d", default=False),
        _f("IsGroupEvent", "Is Group Event", "boolean", "d", default=False),
        *_audit()[1:],
        *_activity_tail("Event"),
        _f("EventSubtype", "Event Subtype", "picklist", "ncdr", 40, picklist=("Event",)),
    ),
)

_TIME_ZONES = (
    "America/Los_Angeles",
    "America/New_York",
    "Europe/London",
    "Europe/Paris",
    "Asia/Tokyo",
    "GMT",
)
_LOCALES = ("en_US", "en_GB", "fr_FR", "de_DE", "ja_JP")
_LANGUAGES = ("en_US", "fr", "de", "ja")

_USER = _Object(
    "User",
    "User",
    "Users",
    "005",
    (
        _id("User ID"),
        _f("Username", "Username", "string", "cuiq", 80),
        _f("LastName", "Last Name", "string", "cu", 80, compound="Name"),
        _f("FirstName", "First Name", "string", "ncu", 40, compound="Name"),
        _f("Name", "Full Name", "string", "N", 121, extra_type="personname"),
        _f("CompanyName", "Company Name", "string", "ncu", 80),
        _f("Division", "Division", "string", "ncu", 80),
        _f("Department", "Department", "string", "ncu", 80),
        _f("Title", "Title", "string", "ncu", 80),
        _f("Email", "Email", "email", "cu", 128),
        _f("Phone", "Phone", "phone", "ncu", 40),
        _f("Alias", "Alias", "string", "cu", 8),
        _f("CommunityNickname", "Nickname", "string", "cuid", 40),
        _f("IsActive", "Active", "boolean", "cud", default=True),
        _f("TimeZoneSidKey", "Time Zone", "picklist", "cur", 40, picklist=_TIME_ZONES),
        _f("LocaleSidKey", "Locale", "picklist", "cur", 40, picklist=_LOCALES),
        _f(
            "EmailEncodingKey",
            "Email Encoding",
            "picklist",
            "cur",
            40,
            picklist=("UTF-8", "ISO-8859-1"),
        ),
        _f("LanguageLocaleKey", "Language", "picklist", "cur", 40, picklist=_LANGUAGES),
        _ref("ProfileId", "Profile ID", "cu", "Profile", "Profile"),
        _ref("UserRoleId", "Role ID", "ncu", "UserRole", "UserRole"),
        _ref("ManagerId", "Manager ID", "ncu", "User", "Manager"),
        _f(
            "UserType",
            "User Type",
            "picklist",
            "nr",
            40,
            picklist=("Standard", "PowerPartner", "CsnOnly", "Guest"),
        ),
        *_audit(deleted=False),
        _f("LastLoginDate", "Last Login", "datetime", "n"),
        _external_id(),
    ),
    deletable=False,
)

_ORGANIZATION = _Object(
    "Organization",
    "Organization",
    "Organizations",
    "00D",
    (
        _id("Organization ID"),
        _f("Name", "Name", "string", "uN", 80),
        _f("Division", "Division", "string", "nu", 80),
        *(
            f
            for f in _address("", "")
            if f.type != "address" and f.name not in ("Latitude", "Longitude")
        ),
        _f("Phone", "Phone", "phone", "nu", 40),
        _f("Fax", "Fax", "phone", "nu", 40),
        _f("PrimaryContact", "Primary Contact", "string", "nu", 80),
        _f("DefaultLocaleSidKey", "Locale", "picklist", "ur", 40, picklist=_LOCALES),
        _f("TimeZoneSidKey", "Time Zone", "picklist", "ur", 40, picklist=_TIME_ZONES),
        _f("LanguageLocaleKey", "Language", "picklist", "ur", 40, picklist=_LANGUAGES),
        _f("FiscalYearStartMonth", "Fiscal Year Starts In", "int", "n", digits=2),
        _f(
            "OrganizationType",
            "Edition",
            "picklist",
            "nr",
            40,
            picklist=(
                "Developer Edition",
                "Enterprise Edition",
                "Unlimited Edition",
                "Professional Edition",
            ),
        ),  # fmt: skip
        _f("NamespacePrefix", "Namespace Prefix", "string", "n", 15),
        _f("InstanceName", "Instance Name", "string", "n", 5),
        _f("IsSandbox", "Is Sandbox", "boolean", "d", default=False),
        _f("TrialExpirationDate", "Trial Expiration Date", "datetime", "n"),
        _f("IsReadOnly", "Is Read Only", "boolean", "d", default=False),
        *_audit(deleted=False),
    ),
    createable=False,
    deletable=False,
)

_BUILTINS: tuple[_Object, ...] = (
    _ACCOUNT,
    _CONTACT,
    _LEAD,
    _OPPORTUNITY,
    _CASE,
    _TASK,
    _EVENT,
    _USER,
    _ORGANIZATION,
)


def _field_dict(spec: _Field, createable_object: bool) -> dict[str, Any]:
    flags = {prop: letter in spec.flags for letter, prop in _FLAG_LETTERS.items()}
    if not createable_object:
        flags["createable"] = False
    t = spec.type
    text = t in _TEXT_TYPES
    long_text = t == "textarea" and spec.length > 255
    is_ref = t in ("reference", "id")
    custom = spec.name.endswith("__c")
    very_long_text = t == "textarea" and spec.length > 4000
    not_groupable = (
        t in ("double", "currency", "percent", "datetime", "address", "location")
        or long_text
        or flags["autoNumber"]
    )
    picklist = [
        {
            "active": True,
            "defaultValue": v == spec.default,
            "label": v,
            "validFor": None,
            "value": v,
        }
        for v in spec.picklist
    ]
    length = spec.length if (text or is_ref) else 0
    return {
        "aggregatable": not very_long_text and t not in ("boolean", "address", "location"),
        "aiPredictionField": False,
        "autoNumber": flags["autoNumber"],
        "byteLength": length if is_ref else length * 3,
        "calculated": flags["calculated"],
        "calculatedFormula": None,
        "cascadeDelete": False,
        "caseSensitive": flags["caseSensitive"],
        "compoundFieldName": spec.compound,
        "controllerName": None,
        "createable": flags["createable"],
        "custom": custom,
        "defaultValue": spec.default,
        "defaultValueFormula": None,
        "defaultedOnCreate": flags["defaultedOnCreate"],
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": spec.digits,
        "displayLocationInDecimal": False,
        "encrypted": False,
        "externalId": flags["externalId"],
        "extraTypeInfo": spec.extra_type,
        "filterable": not long_text,
        "filteredLookupInfo": None,
        "formulaTreatNullNumberAsZero": False,
        "groupable": not not_groupable,
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": flags["idLookup"],
        "inlineHelpText": None,
        "label": spec.label,
        "length": length,
        "mask": None,
        "maskType": None,
        "name": spec.name,
        "nameField": flags["nameField"],
        "namePointing": len(spec.ref) > 1,
        "nillable": flags["nillable"],
        # Field permissions apply to optional, editable fields only (as on real orgs).
        "permissionable": flags["nillable"]
        and (flags["createable"] or flags["updateable"])
        and t != "id",
        "picklistValues": picklist,
        "polymorphicForeignKey": len(spec.ref) > 1,
        "precision": spec.precision,
        "queryByDistance": False,
        "referenceTargetField": None,
        "referenceTo": list(spec.ref),
        "relationshipName": spec.rel,
        "relationshipOrder": None,
        "restrictedDelete": False,
        "restrictedPicklist": flags["restrictedPicklist"],
        "scale": spec.scale,
        "searchPrefilterable": t == "reference" and flags["nillable"],
        "soapType": _SOAP_TYPES.get(t, "xsd:string"),
        "sortable": t not in ("address", "location") and not very_long_text,
        "type": t,
        "unique": flags["unique"],
        "updateable": flags["updateable"],
        "writeRequiresMasterRead": False,
    }


def _urls(name: str, version: str) -> dict[str, str]:
    base = f"/services/data/v{version}/sobjects/{name}"
    return {
        "compactLayouts": f"{base}/describe/compactLayouts",
        "rowTemplate": f"{base}/{{ID}}",
        "approvalLayouts": f"{base}/describe/approvalLayouts",
        "listviews": f"{base}/listviews",
        "describe": f"{base}/describe",
        "quickActions": f"{base}/quickActions",
        "layouts": f"{base}/describe/layouts",
        "sobject": base,
    }


def _child_relationships(name: str) -> list[dict[str, Any]]:
    """Child relationships pointing at `name`, derived from the built-ins' lookups."""
    out = []
    for obj in _BUILTINS:
        for spec in obj.fields:
            if (
                spec.type == "reference"
                and name in spec.ref
                and spec.name not in ("CreatedById", "LastModifiedById")
            ):
                out.append(
                    {
                        "cascadeDelete": spec.cascade,
                        "childSObject": obj.name,
                        "deprecatedAndHidden": False,
                        "field": spec.name,
                        "junctionIdListNames": [],
                        "junctionReferenceTo": [],
                        "relationshipName": spec.child,
                        "restrictedDelete": False,
                    }
                )
    return sorted(out, key=lambda c: (c["childSObject"], c["field"]))


def _describe(obj: _Object, version: str) -> dict[str, Any]:
    layoutable = obj.name != "Organization"
    return {
        "actionOverrides": [],
        "activateable": False,
        "associateEntityType": None,
        "associateParentEntity": None,
        "childRelationships": _child_relationships(obj.name),
        "compactLayoutable": layoutable,
        "createable": obj.createable,
        "custom": False,
        "customSetting": False,
        "deepCloneable": False,
        "defaultImplementation": None,
        "deletable": obj.deletable,
        "deprecatedAndHidden": False,
        "extendedBy": None,
        "extendsInterfaces": None,
        "feedEnabled": layoutable,
        "fields": [_field_dict(f, obj.createable) for f in obj.fields],
        "hasSubtypes": False,
        "implementedBy": None,
        "implementsInterfaces": None,
        "isInterface": False,
        "isSubtype": False,
        "keyPrefix": obj.key_prefix,
        "label": obj.label,
        "labelPlural": obj.label_plural,
        "layoutable": layoutable,
        "listviewable": None,
        "lookupLayoutable": None,
        "mergeable": obj.name in ("Account", "Contact", "Lead", "Case"),
        "mruEnabled": layoutable,
        "name": obj.name,
        "namedLayoutInfos": [],
        "networkScopeFieldName": None,
        "queryable": True,
        "recordTypeInfos": [
            {
                "active": True,
                "available": True,
                "defaultRecordTypeMapping": True,
                "developerName": "Master",
                "master": True,
                "name": "Master",
                "recordTypeId": "012000000000000AAA",
                "urls": {
                    "layout": f"/services/data/v{version}/sobjects/{obj.name}/describe/layouts/012000000000000AAA"
                },
            }
        ]
        if layoutable
        else [],
        "replicateable": True,
        "retrieveable": True,
        "searchLayoutable": layoutable,
        "searchable": layoutable,
        "sobjectDescribeOption": "FULL",
        "supportedScopes": [{"label": f"All {obj.label_plural.lower()}", "name": "everything"}],
        "triggerable": layoutable,
        "undeletable": obj.deletable,
        "updateable": obj.updateable,
        "urls": _urls(obj.name, version),
        **obj.extra,
    }


_CACHE: dict[str, dict[str, dict[str, Any]]] = {}


def builtin_describes(api_version: str = DEFAULT_API_VERSION) -> dict[str, dict[str, Any]]:
    """Full describe dicts of the built-in objects, keyed by API name (a fresh deep copy)."""
    if api_version not in _CACHE:
        _CACHE[api_version] = {obj.name: _describe(obj, api_version) for obj in _BUILTINS}
    return copy.deepcopy(_CACHE[api_version])
