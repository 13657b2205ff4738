"""The console's words, in Chinese (zh-CN, the default) and English.

One table: a key, its Chinese and its English. A report's column keys are keys here too, so a
column a report grows without a label is caught by a test (``tests/hub/test_console.py``)
rather than shown to HQ as a raw key. Error codes (``protocol.errors``) have a Chinese sentence
each where a user can cause them; an unknown code shows the service's own (English) message.
"""

from __future__ import annotations

from typing import Literal

from hub.api.console import authoring_words

Lang = Literal["zh", "en"]
LANGS: tuple[Lang, ...] = ("zh", "en")
HTML_LANG = {"zh": "zh-CN", "en": "en"}

_WORDS: dict[str, tuple[str, str]] = {
    # chrome
    "app": ("会员通 总部控制台", "membergate HQ console"),
    "sign_in": ("登录", "Sign in"), "sign_out": ("退出", "Sign out"),
    "username": ("用户名", "Username"), "password": ("密码", "Password"),
    "signed_in_as": ("当前用户", "Signed in as"), "role": ("角色", "Role"),
    "language": ("English", "中文"),
    "nav_dashboard": ("首页看板", "Dashboard"), "nav_reports": ("报表", "Reports"),
    "nav_members": ("会员查询", "Members"), "nav_segments": ("标签与分群", "Tags & segments"),
    "nav_rfm": ("RFM 分析", "RFM"), "nav_journeys": ("营销旅程", "Journeys"),
    "nav_campaigns": ("促销活动", "Campaigns"), "nav_fleet": ("门店设备", "Fleet"),
    "nav_users": ("用户与角色", "Users & roles"), "nav_audit": ("审计日志", "Audit log"),
    "nav_api": ("API 文档", "API docs"),
    # filters and actions
    "start": ("开始日期", "From"), "end": ("结束日期", "To"), "region": ("区域", "Region"),
    "store": ("门店", "Store"), "category": ("品类", "Category"), "tier": ("等级", "Tier"),
    "segment": ("分群", "Segment"), "grain": ("粒度", "Grain"), "day": ("日", "Day"),
    "week": ("周", "Week"), "month": ("月", "Month"), "all": ("全部", "All"),
    "apply": ("查询", "Apply"), "export_csv": ("导出 CSV", "Export CSV"),
    "export_xlsx": ("导出 Excel", "Export XLSX"), "search": ("搜索", "Search"),
    "phone": ("手机号", "Phone"), "member_code": ("会员码", "Member code"),
    "card_uid": ("卡号", "Card"), "name": ("姓名", "Name"), "create": ("新建", "Create"),
    "save": ("保存", "Save"), "preview": ("预览人数", "Preview count"),
    "members_count": ("会员数", "Members"), "sample": ("样例", "Sample"),
    "definition": ("条件定义 (JSON)", "Definition (JSON)"), "state": ("状态", "State"),
    "no_data": ("暂无数据", "No data"), "drill": ("下钻", "Drill down"),
    "back": ("返回", "Back"), "details": ("详情", "Details"), "effect": ("效果", "Effect"),
    # completeness
    "complete": ("数据完整", "Complete"),
    "incomplete": ("以下门店的数据尚未全部上传，数字可能变化：",
                   "These stores have not sent everything yet; figures may change:"),
    "merged_to": ("数据合并至", "merged up to"), "never": ("从未", "never"),
    "revised": ("以下门店日数据因补传已重新计算：",
                "These store-days were recomputed after late uploads:"),
    "revised_at": ("重算于", "recomputed at"),
    # reports
    "report_sales_trend": ("销售趋势", "Sales trend"),
    "report_categories": ("品类占比", "Category share"),
    "report_profile": ("时段分布", "Hour and weekday profile"),
    "report_products": ("商品排行", "Product ranking"),
    "report_staff": ("员工业绩", "Staff performance"),
    "report_member_structure": ("会员结构", "Member structure"),
    "report_member_activity": ("活跃与复购", "Active members and repurchase"),
    "report_funnel": ("注册转化漏斗", "Registration funnel"),
    "report_top_up_loyalty": ("储值忠诚会员", "Loyal members by top-ups"),
    "report_points": ("积分负债", "Points outstanding"),
    "report_stored_value": ("储值负债", "Stored value outstanding"),
    "report_settlement": ("跨店结算", "Inter-store settlement"),
    "report_campaigns": ("活动与优惠券", "Campaigns and coupons"),
    "report_dashboard": ("首页看板", "Dashboard"),
    # pages
    "fleet_title": ("门店与设备", "Stores and devices"),
    "tag": ("标签", "Tag"),
    "fleet_online": ("在线门店", "Stores online"), "fleet_offline": ("离线门店", "Stores offline"),
    "fleet_waiting": ("待上传事件", "Events waiting"),
    "fleet_device_issues": ("设备异常", "Device problems"),
    "fleet_last_seen": ("最近联系", "Last heard from"), "fleet_outbox": ("待发送", "Outbox"),
    "fleet_lag": ("未合并事件", "Events not merged"), "fleet_devices": ("设备", "Devices"),
    "fleet_refusals": ("拒收", "Refused"), "fleet_software": ("软件", "Software"),
    "fleet_campaigns": ("活动版本", "Campaign versions"),
    "fleet_online_note": ("5 分钟内有联系的门店视为在线；离线门店的销售会在恢复联网后补传，"
                          "报表会注明其数据截至何时。",
                          "A store heard from within 5 minutes is online; an offline store's"
                          " sales arrive when it reconnects, and every report says up to when"
                          " its data reaches."),
    "ago_s": ("{n} 秒前", "{n} s ago"), "ago_min": ("{n} 分钟前", "{n} min ago"),
    "ago_h": ("{n} 小时前", "{n} h ago"), "ago_d": ("{n} 天前", "{n} days ago"),
    "health_connected": ("正常", "OK"), "health_disconnected": ("未连接", "disconnected"),
    "health_error": ("故障", "error"), "health_paper_low": ("纸将用完", "paper low"),
    "health_paper_out": ("缺纸", "out of paper"),
    "device_scanner": ("扫码枪", "scanner"), "device_card_reader": ("读卡器", "card reader"),
    "device_printer": ("小票打印机", "receipt printer"),
    "device_display": ("客显屏", "pole display"),
    "refused_hub": ("总部拒收", "refused by the hub"),
    "refused_store": ("门店拒收", "refused by the store"),
    "users_title": ("用户与角色", "Users and roles"), "audit_title": ("审计日志", "Audit log"),
    "member_360": ("会员360视图", "Member 360"), "segments_title": ("分群", "Segments"),
    "tags_title": ("标签目录", "Tag catalogue"), "rfm_title": ("RFM 运行记录", "RFM runs"),
    "rfm_grid": ("R×F 分布 (人数)", "R×F grid (members)"),
    "rfm_movement": ("与上次相比的迁移", "Movement since the last run"),
    "journeys_title": ("营销旅程", "Journeys"), "campaigns_title": ("促销活动", "Campaigns"),
    "segment_builder": ("分群编辑器", "Segment builder"),
    "error_title": ("出错了", "Something went wrong"),
    "sign_in_title": ("登录总部控制台", "Sign in to the HQ console"),
    "today": ("今日", "Today"), "last_30_days": ("近30天", "Last 30 days"),
    "masked_note": ("个人信息按权限脱敏显示", "Personal data is masked for your role"),
    "publish": ("发布到门店", "Publish to stores"),
    # columns
    "period": ("期间", "Period"), "sales": ("销售笔数", "Sales"), "items": ("件数", "Items"),
    "gross": ("原价金额", "Gross"), "discount": ("折扣", "Discount"),
    "amount": ("销售额", "Amount"), "refunds": ("退货笔数", "Refunds"),
    "refund_amount": ("退货金额", "Refunded"), "net": ("净销售额", "Net sales"),
    "member_share": ("会员销售占比", "Members' share"), "basket": ("客单价", "Average basket"),
    "net_last_year": ("去年同期", "Same period last year"), "growth": ("同比", "Growth"),
    "store_id": ("门店", "Store"), "store_name": ("门店名称", "Store name"),
    "share": ("占比", "Share"), "hour": ("时段", "Hour"), "weekday": ("星期", "Weekday"),
    "sku": ("商品编码", "SKU"), "qty": ("数量", "Qty"), "rank": ("排名", "Rank"),
    "staff_id": ("员工", "Staff"), "staff_role": ("岗位", "Role"),
    "member_sales": ("会员笔数", "Member sales"), "member_net": ("会员销售额", "Member net"),
    "registrations": ("新增会员", "Registrations"), "members": ("会员数", "Members"),
    "stage": ("生命周期", "Stage"), "rfm_group": ("RFM 分组", "RFM group"),
    "group_name": ("分组名称", "Group name"), "channel": ("渠道", "Channel"),
    "new_members": ("新会员", "New members"), "active_members": ("活跃会员", "Active members"),
    "buyers": ("购买会员", "Buyers"), "repeat_buyers": ("复购会员", "Repeat buyers"),
    "repurchase_rate": ("复购率", "Repurchase rate"),
    "top_share": ("前20%会员贡献", "Top 20 % share"),
    "cohort": ("注册月份", "Cohort"), "registered": ("注册", "Registered"),
    "first_purchase_7d": ("7天内首购", "First purchase ≤ 7 d"),
    "repeat_90d": ("90天内复购", "Repeat ≤ 90 d"),
    "topups": ("充值次数", "Top-ups"), "topup_principal": ("充值本金", "Topped up"),
    "points": ("积分", "Points"), "points_outstanding": ("未兑积分", "Points outstanding"),
    "expires": ("到期月份", "Expires"), "expiring_points": ("到期积分", "Expiring points"),
    "breakage": ("预计不兑换", "Expected breakage"),
    "as_of": ("截至", "As of"), "legal_entity": ("法人主体", "Legal entity"),
    "principal": ("本金", "Principal"), "bonus": ("赠送", "Bonus"), "total": ("合计", "Total"),
    "topped_up": ("充值", "Topped up"), "spent": ("消费", "Spent"),
    "net_position": ("净头寸", "Net position"), "owes": ("付款方", "Owes"),
    "owed": ("收款方", "Is owed"), "campaign_id": ("活动", "Campaign"),
    "issued": ("发券", "Issued"), "redeemed": ("核销", "Redeemed"),
    "redemption_rate": ("核销率", "Redemption rate"),
    "discount_cost": ("折扣成本", "Discount cost"),
    "coupon_code": ("券码", "Coupon"), "sale_id": ("小票", "Sale"), "at": ("时间", "When"),
    "kept_store": ("有效核销门店", "Kept at"), "uplift": ("增量", "Uplift"), "roi": ("ROI", "ROI"),
    "label": ("项目", "Item"), "value": ("数值", "Value"), "date": ("日期", "Date"),
    "last_week": ("上周同日", "Same day last week"),
    "source": ("来源", "Source"), "conflicts": ("重复核销", "Conflicts"),
    "promotion_discount": ("促销折扣", "Promotion discounts"),
    "coupon_discount": ("优惠券折扣", "Coupon discounts"),
    "holdout_percent": ("对照组比例", "Holdout %"), "has_effect": ("可测效果", "Has effect"),
    "redemption": ("核销", "Redemption"), "coupon_conflicts": ("重复核销的券", "Coupon conflicts"),
    "campaigns": ("活动", "Campaigns"),
    "trend": ("趋势", "Trend"), "regions": ("按区域", "By region"),
    "stores": ("按门店", "By store"),
    "today_sales": ("今日笔数", "Sales today"), "today_net": ("今日净销售额", "Net today"),
    "last_week_net": ("上周同日净销售额", "Net same day last week"), "change": ("环比", "Change"),
    "refund_items": ("退货件数", "Items returned"), "first": ("起", "From"), "last": ("止", "To"),
    "sales_last_year": ("去年同期笔数", "Sales last year"), "categories": ("品类", "Categories"),
    "net_items": ("净件数", "Items kept"), "items_share": ("件数占比", "Items share"),
    "hours": ("按小时", "By hour"), "weekdays": ("按星期", "By weekday"),
    "days": ("天数", "Days"), "sales_per_day": ("日均笔数", "Sales per day"),
    "net_per_day": ("日均净销售额", "Net per day"), "top": ("畅销商品", "Top movers"),
    "returned": ("退货数量", "Returned"), "slow": ("滞销商品", "Slow movers"),
    "skus_sold": ("动销商品数", "SKUs sold"), "cashiers": ("收银员", "Cashiers"),
    "guides": ("导购", "Shopping guides"), "cashier_sales": ("收银笔数", "Cashier sales"),
    "guide_sales": ("导购笔数", "Guide sales"), "guide_net": ("导购净销售额", "Guide net"),
    "tiers": ("按等级", "By tier"), "stages": ("按生命周期", "By stage"),
    "rfm": ("按RFM分组", "By RFM group"), "new_by_store": ("新会员（按门店）", "New by store"),
    "new_by_channel": ("新会员（按渠道）", "New by channel"), "rfm_run": ("RFM 运行", "RFM run"),
    "rfm_as_of": ("RFM 截至", "RFM as of"), "active": ("活跃会员", "Active members"),
    "repurchase": ("复购", "Repurchase"), "cohorts": ("注册队列", "Cohorts"),
    "first_purchase_rate": ("首购率", "First purchase rate"),
    "repeat_rate": ("复购率", "Repeat rate"), "funnel": ("漏斗", "Funnel"),
    "windows_open_from": ("窗口未结束（自）", "Windows still open from"),
    "by_store": ("按门店", "By store"), "expiry": ("到期计划", "Expiry schedule"),
    "expired": ("已过期", "Expired"), "breakage_rate": ("预计不兑换率", "Breakage rate"),
    "by_entity": ("按法人主体", "By legal entity"),
    # the member card
    "from_stage": ("原阶段", "From"), "to_stage": ("新阶段", "To"),
    "member": ("会员资料", "Profile"), "aliases": ("合并的会员号", "Merged ids"),
    "balance": ("余额", "Balance"), "birthday": ("生日", "Birthday"),
    "birthday_gift_year": ("生日礼年份", "Birthday gift year"), "card_states": ("卡状态", "Cards"),
    "cards": ("会员卡", "Cards"), "changes": ("变化", "Changes"), "consents": ("授权", "Consents"),
    "coupons": ("优惠券", "Coupons"), "doc_id": ("单号", "Document"), "email": ("邮箱", "E-mail"),
    "gender": ("性别", "Gender"),
    "erased": ("已删除", "Erased"), "expires_on": ("到期日", "Expires on"), "f": ("F", "F"),
    "favourite_categories": ("偏好品类", "Favourite categories"),
    "favourite_products": ("偏好商品", "Favourite products"),
    "first_purchase": ("首次购买", "First purchase"), "frequency": ("频次", "Frequency"),
    "grants": ("授权额度", "Grants"), "group": ("分组", "Group"), "guide_id": ("导购", "Guide"),
    "home_store": ("归属门店", "Home store"), "hq_tags": ("总部标签", "HQ tags"),
    "journeys": ("营销旅程", "Journeys"), "kind": ("类型", "Kind"),
    "last_date": ("最近日期", "Last date"), "last_purchase": ("最近购买", "Last purchase"),
    "lifecycle": ("生命周期", "Lifecycle"), "local_date": ("日期", "Date"),
    "lots": ("积分批次", "Lots"), "m": ("M", "M"), "member_id": ("会员号", "Member id"),
    "merged_into": ("并入", "Merged into"), "messages": ("消息", "Messages"),
    "min_spend": ("最低消费", "Minimum spend"), "monetary": ("金额", "Monetary"),
    "next_tier": ("下一等级", "Next tier"), "pin_hlc": ("密码时间", "PIN stamp"),
    "pin_locked": ("密码锁定", "PIN locked"), "pin_set": ("已设支付密码", "PIN set"),
    "purchases": ("购买次数", "Purchases"), "r": ("R", "R"),
    "recency_days": ("距上次购买天数", "Days since purchase"), "recent": ("最近交易", "Recent"),
    "run_id": ("运行", "Run"), "segments": ("所属分群", "Segments"),
    "shares": ("各店份额", "Shares"), "since": ("自", "Since"), "spend": ("消费", "Spend"),
    "spend_needed": ("升级还需消费", "Spend to next tier"),
    "stored_value": ("储值", "Stored value"), "sv_bonus": ("储值赠送", "SV bonus"),
    "sv_principal": ("储值本金", "SV principal"), "tags": ("标签", "Tags"),
    "unmasked": ("未脱敏字段", "Unmasked"), "visits": ("到店", "Visits"),
    "window_months": ("统计月数", "Window (months)"),
    "window_spend": ("窗口内消费", "Window spend"),
    "quarter_ends": ("季末余额", "At quarter ends"), "pairs": ("门店间应收应付", "Store pairs"),
}

ERRORS: dict[str, str] = {
    "period_reversed": "结束日期早于开始日期。",
    "period_unbounded": "查询期间过长（最多三年）。",
    "unknown_region": "没有这个区域。",
    "unknown_store": "没有这个门店。",
    "unknown_segment": "没有这个分群。",
    "filter_out_of_scope": "筛选条件超出了您的数据权限范围。",
    "member_not_found": "没有这个会员（或不在您的权限范围内）。",
    "forbidden": "您的角色无权访问此页面。",
    "export_too_large": "导出行数超过上限，请申请批量导出审批。",
    "unknown_report": "没有这个报表。",
    "unknown_grain": "粒度只能是日、周或月。",
    "bad_request": "请求参数有误。",
    "bad_date": "日期格式有误，应为 年-月-日。",
    "filter_not_supported": "该报表不支持此筛选条件。",
}

# What a report's figures mean, as the Chinese page states it (the API's ``notes`` say it in
# full, in English; the page shows them too, folded).
DEFINITIONS: dict[str, list[str]] = {
    "dashboard": ["净销售额 = 期间内销售实收 − 期间内退款（退款计入退款当天、退款门店）。",
                  "今日按总部所在时区的日历计算，与上周同一天比较。"],
    "sales_trend": ["净销售额 = 期间内销售实收 − 期间内退款；"
                    "会员销售占比 = 会员净销售额 ÷ 净销售额；",
                    "客单价 = 净销售额 ÷ 销售笔数（四舍五入）。",
                    "去年同期为同一日期区间前推一年。"],
    "categories": ["品类净销售额 = 该品类销售额 − 该品类退货额；占比为占期间净销售额的比例。"],
    "profile": ["时段与星期均按门店本地时间；日均 = 该星期几的合计 ÷ 期间内该星期几的天数。"],
    "products": ["数量 = 售出 − 退回；滞销商品为期间内有销售的商品中净销售额最低者。"],
    "staff": ["收银员：其收银的销售减去其办理的退款；导购：计入其名下的销售减去这些销售的退款。"],
    "member_structure": ["会员数为您权限范围内的有效会员；区域按会员归属门店。"],
    "member_activity": ["月活跃会员：当月在所选门店至少购买一次的会员。",
                        "复购率 = 期间内购买≥2次（全额退款的不计）的会员 ÷ 购买≥1次的会员。",
                        "前20%会员贡献：按净消费排序的前20%会员占会员净消费的比例。"],
    "funnel": ["按注册月份与归属门店：注册 → 7天内首购 → 注册后90天内复购。"],
    "top_up_loyalty": ["按期间内在所选门店的充值本金排序（赠送金额不计）；姓名按权限脱敏。"],
    "points": ["未兑积分为有效会员的积分余额合计；",
               "预计不兑换率按历史上已结清积分中过期的比例估算。"],
    "stored_value": ["储值余额分本金与赠送，按发卡门店与法人主体列示，并给出期间内各季末余额。"],
    "settlement": ["会员在A店充值、在B店消费：B店为A店的储值提供了商品，A店应向B店结算。"],
    "campaigns": ["核销为期间内在所选门店有效的核销；折扣成本为归属该活动或其券的折扣合计。"],
}

# Values reports answer with that a reader should see in their language (a text cell).
VALUES: dict[str, str] = {
    "Mon": "周一", "Tue": "周二", "Wed": "周三", "Thu": "周四", "Fri": "周五", "Sat": "周六",
    "Sun": "周日", "today": "今日", "same_day_last_week": "上周同日", "store": "门店",
    "online": "线上", "in_store": "门店", "new": "新会员", "active": "活跃", "sleeping": "沉睡",
    "lost": "流失",
    "reactivated": "已唤醒", "campaign": "活动", "journey": "旅程", "kept": "有效",
    "conflict": "重复", "none": "无", "standard": "普通", "silver": "银卡", "gold": "金卡",
    "platinum": "白金卡", "never": "永不过期",
    # coupon states and kinds, journey and segment states, roles
    "issued": "未使用", "redeemed": "已核销", "voided": "已作废", "expired": "已过期",
    "amount_off": "代金券", "percent_off": "折扣券", "paused": "已暂停", "archived": "已归档",
    "hq_admin": "总部管理员", "region_manager": "区域经理", "store_manager": "店长",
    "marketing": "市场营销", "auditor": "审计员", "guide": "导购",
}


def value(lang: Lang, text: str) -> str:
    return VALUES.get(text, text) if lang == "zh" else text



def t(lang: Lang, key: str) -> str:
    """The word for ``key``; the key itself when there is none (a test keeps that rare)."""
    words = _WORDS.get(key)
    if words is None:
        return key
    return words[0] if lang == "zh" else words[1]


def known(key: str) -> bool:
    return key in _WORDS


PARTS = {"start": "开始日期", "end": "结束日期", "store": "门店", "region": "区域",
         "segment": "分群", "grain": "粒度", "report": "报表", "table": "表"}

# The authoring pages' words, refusals and parts (``hub.api.console.authoring_words``).
_WORDS.update(authoring_words.WORDS)
ERRORS.update(authoring_words.ERRORS)
PARTS.update(authoring_words.PARTS)


def error_text(lang: Lang, code: str, message: str, part: str | None = None) -> str:
    """A refusal as the page shows it: the Chinese sentence for its code (naming the part of
    the request at fault), or the service's message."""
    if lang == "zh" and code in ERRORS:
        return ERRORS[code] + (f"（{PARTS.get(part, part)}）" if part else "")
    return message


def pick(query_lang: str | None, cookie_lang: str | None) -> Lang:
    for given in (query_lang, cookie_lang):
        if given in LANGS:
            return "zh" if given == "zh" else "en"
    return "zh"
